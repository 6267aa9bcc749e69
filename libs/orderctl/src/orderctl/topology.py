"""`orderctl topology plan`: what differs between the code's topology and the broker's
(`migration` makes it so).

The code's topology is `servicekit.topology.ServiceTopology` with each service's retry delays
from its settings' environment (`<PREFIX>RETRY_DELAYS`, else the default). The routing keys
a work queue is bound to are the running release's business (it converges them at start), so
they are read from the broker, never guessed here: orderctl imports no service.
"""

import os
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import PositiveFloat, TypeAdapter, ValidationError

from servicekit.registry import ServiceEntry
from servicekit.topology import (
    DEFAULT_RETRY_DELAYS,
    EVENTS_EXCHANGE,
    ServiceTopology,
    backoff_exchange_name,
    consuming_queue_arguments,
    dead_letter_exchange_name,
    redeliver_exchange_name,
    retry_queue_name,
    work_queue_name,
)

from .errors import CommandError
from .management import ListedQueue, Listing

HOLDING_SUFFIX = ".migrating"

_DELAYS = TypeAdapter(tuple[PositiveFloat, ...])


def retry_delays(entry: ServiceEntry) -> tuple[float, ...]:
    """The delays the service reads from `<PREFIX>RETRY_DELAYS` (a JSON list), as its
    settings do; the default when unset."""
    variable = f"{entry.env_prefix}RETRY_DELAYS"
    raw = os.environ.get(variable)
    if raw is None:
        return DEFAULT_RETRY_DELAYS
    try:
        return _DELAYS.validate_json(raw)
    except ValidationError as exc:
        raise CommandError(f"{variable}={raw!r} is not a list of positive seconds") from exc


def holding_queue_name(queue: str) -> str:
    return f"{queue}{HOLDING_SUFFIX}"


@dataclass(frozen=True)
class Drifted:
    """A consuming queue the broker holds with other arguments than the code declares."""

    queue: ListedQueue
    differences: list[str]


@dataclass
class ServicePlan:
    service: str
    topology: ServiceTopology
    """The code's topology, with the routing keys the broker binds the work queue to."""
    deployed: bool = True
    """False: none of the service's queues is on the broker (it never ran here)."""
    missing_queues: list[str] = field(default_factory=list)
    missing_exchanges: list[str] = field(default_factory=list)
    drifted: list[Drifted] = field(default_factory=list)
    holding: list[ListedQueue] = field(default_factory=list)
    """`<queue>.migrating` left by an interrupted apply: apply finishes their migration."""
    obsolete_waits: list[ListedQueue] = field(default_factory=list)
    obsolete_routing_exchanges: list[str] = field(default_factory=list)
    extra_retry_queues: list[ListedQueue] = field(default_factory=list)
    """Retry queues beyond the layout, from a longer earlier one: still consumed, kept."""

    @property
    def differs(self) -> bool:
        return bool(
            self.missing_queues
            or self.missing_exchanges
            or self.drifted
            or self.holding
            or self.obsolete_waits
            or self.obsolete_routing_exchanges
        )


def argument_differences(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """`x-delivery-limit: 2 -> 5`, one line per argument that differs."""
    return [
        f"{name}: {_shown(found.get(name))} -> {_shown(wanted.get(name))}"
        for name in sorted(found.keys() | wanted.keys())
        if found.get(name) != wanted.get(name)
    ]


def _shown(value: Any) -> str:
    return "(none)" if value is None else repr(value)


def plan_service(service: str, delays: tuple[float, ...], listing: Listing) -> ServicePlan:
    """Compare the code's topology of `service` with `listing`, the broker's."""
    work = work_queue_name(service)
    routing_keys = sorted(
        binding.routing_key
        for binding in listing.bindings
        if binding.source == EVENTS_EXCHANGE.name
        and binding.destination in (work, holding_queue_name(work))
    )
    queues = listing.queues
    retry_tiers = len(delays)  # and those beyond, found as the service finds them
    while retry_queue_name(service, retry_tiers + 1) in queues:
        retry_tiers += 1
    topology = ServiceTopology(service, tuple(routing_keys), delays, retry_tiers=retry_tiers)
    plan = ServicePlan(service, topology, deployed=bool(queues))
    if not plan.deployed:
        return plan
    plan.extra_retry_queues = [
        queues[retry_queue_name(service, tier)] for tier in range(len(delays) + 1, retry_tiers + 1)
    ]
    for name in [queue.name for queue in topology.consuming_queues]:
        holding = queues.get(holding_queue_name(name))
        if holding is not None:
            plan.holding.append(holding)
        found = queues.get(name)
        if found is None:
            if holding is None:
                plan.missing_queues.append(name)
            continue
        differences = argument_differences(found.arguments, declared_arguments(topology, name))
        if differences:
            plan.drifted.append(Drifted(found, differences))
    for wait in topology.wait_queues:
        found = queues.get(wait.name)
        differences = found and argument_differences(
            found.arguments, declared_arguments(topology, wait.name)
        )
        if differences:
            plan.drifted.append(Drifted(found, differences))
    wanted = {queue.name for queue in [*topology.wait_queues, topology.dead_letter_queue]}
    plan.missing_queues += sorted(wanted - queues.keys())
    plan.obsolete_waits = [
        queue
        for name, queue in sorted(queues.items())
        if name.startswith(f"{service}.wait.") and name not in wanted
    ]
    exchanges = {
        dead_letter_exchange_name(service),
        redeliver_exchange_name(service),
        backoff_exchange_name(service),
        topology.backoff_routing_exchange,
    }
    plan.missing_exchanges = sorted(exchanges - listing.exchanges.keys())
    routing_exchange = re.compile(rf"^{re.escape(backoff_exchange_name(service))}\.[0-9a-f]{{8}}$")
    plan.obsolete_routing_exchanges = sorted(
        name
        for name in listing.exchanges
        if routing_exchange.match(name) and name != topology.backoff_routing_exchange
    )
    return plan


def declared_arguments(topology: ServiceTopology, queue: str) -> dict[str, Any]:
    """A wait or consuming queue's arguments as the code declares them and the broker lists
    them: with its type. A retry queue beyond the layout is declared as any consuming one."""
    waits = {wait.name: wait.arguments for wait in topology.wait_queues}
    arguments = waits.get(queue) or consuming_queue_arguments(topology.service, queue)
    return {"x-queue-type": "quorum", **arguments}
