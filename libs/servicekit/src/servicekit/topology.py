"""The RabbitMQ topology, declared identically by services, tests and the operator CLI.

One durable topic exchange `events` carries every event under `<aggregate>.<event>.v<N>`.
Each consuming service owns a chain of quorum queues; the broker moves a failing message
along it by dead-lettering, so retry state lives in the broker, not in a consumer:

    events ─▶ <svc>.work ─reject─▶ <svc>.backoff ─▶ <svc>.wait.1.1s
              <svc>.wait.1.1s ─TTL 1s─▶ <svc>.redeliver ─▶ <svc>.retry.1
              <svc>.retry.1 ─reject─▶ <svc>.backoff ─▶ <svc>.wait.2.10s ─TTL 10s─▶ ...
              ...            (the last retry queue loops on the last wait)

- `<svc>.work` and every `<svc>.retry.<n>` are consumed by the same handlers. Rejecting a
  message there dead-letters it, and the broker records that in the message's `x-death`
  header: the attempt count survives restarts and is shared by replicas.
- Every queue is fed through a binding, never by name through the default exchange, so an
  operator can move a queue's inflow elsewhere (`orderctl topology apply`).
- A consuming queue's arguments never depend on the retry settings: it dead-letters into the
  service's fanout exchange `<svc>.backoff` under its own name. `<svc>.backoff` is bound to
  one routing exchange per layout of waits, `<svc>.backoff.<fingerprint>`, whose bindings
  send each queue's failures to the wait queue of its next tier.
- `<svc>.wait.<tier>.<delay>` has no consumer; its queue-level TTL is the tier's backoff
  delay (per-message TTL would block behind the message at the head on RabbitMQ 3.10). Its
  name says everything its arguments hold, so a new delay is a new queue beside the old one,
  never a redeclaration RabbitMQ would refuse. It dead-letters into `<svc>.redeliver`, where
  each consuming queue is bound under its own name.
- `<svc>.dlx` is a fanout exchange into `<svc>.dlq`, where the consumer puts what can never be
  processed, or is out of attempts, with the reason in the headers. Operators replay from there
  to `<svc>.work` alone, so other services see nothing twice.

A service started with other retry delays declares the new waits and a new routing exchange,
and starts `<svc>.backoff` afresh bound to it alone (`ServiceTopology.declare`). Messages in
the old waits still expire into their retry queue; `orderctl topology apply` removes the old
waits once they are empty. A shorter list of delays leaves retry queues beyond it: they are
still consumed, and send their failures to the last wait.

What each service may do on the broker, and nothing more, is `broker_permissions`: provisioning
grants exactly that, and declares `events`, which no service may configure.
"""

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.exceptions import (
    ChannelAccessRefused,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
)
from faststream.rabbit import ExchangeType, QueueType, RabbitExchange, RabbitQueue

from contracts import EVENTS_BY_ROUTING_KEY

EVENTS_EXCHANGE = RabbitExchange("events", type=ExchangeType.TOPIC, durable=True, declare=False)
"""`declare=False`: FastStream's publishers only check that it exists. It is declared once, by
`ServiceTopology.declare` where the service may configure it, else by provisioning."""

DEFAULT_EXCHANGE = "amq.default"
"""The name RabbitMQ checks permissions on for the default exchange (`""`)."""


class BrokerPermissions(NamedTuple):
    """A RabbitMQ user's permission regexes in one virtual host (`rabbitmqctl set_permissions`)."""

    configure: str
    write: str
    read: str


def broker_permissions(service: str) -> BrokerPermissions:
    """What `service` may do in the system's virtual host, checked on the real broker
    (tests/test_least_privilege.py):

    - configure (declare, delete) only its own queues and exchanges, `<service>.*`;
    - write (publish, and be the destination of a binding: a queue bound to `events`)
      its own queues and exchanges, `events`, and the default exchange. The retry chain
      never goes through the default exchange (every queue is fed through a binding);
      request-reply does: an asker publishes its query through it to the responder's
      queue, and a responder its answer to the asker's direct reply-to;
    - read (consume, and be the source of a binding) its own queues and `events`.
      Consuming direct reply-to (`amq.rabbitmq.reply-to`) needs no read permission.
    """
    own = rf"{re.escape(service)}\..+"
    return BrokerPermissions(
        configure=f"^{own}$",
        write=f"^({own}|{re.escape(EVENTS_EXCHANGE.name)}|{re.escape(DEFAULT_EXCHANGE)})$",
        read=f"^({own}|{re.escape(EVENTS_EXCHANGE.name)})$",
    )


class EventsExchangeMissing(RuntimeError):
    """`events` does not exist and this user may not declare it: provisioning must."""


DELIVERY_LIMIT = 5
"""Deliveries without a settlement (a consumer crashing on the message) before the broker moves
it along the retry chain as if it had been rejected."""

DEFAULT_RETRY_DELAYS = (1.0, 10.0, 60.0)


def work_queue_name(service: str) -> str:
    return f"{service}.work"


def retry_queue_name(service: str, tier: int) -> str:
    return f"{service}.retry.{tier}"


def wait_queue_name(service: str, tier: int, delay: float) -> str:
    """`orders.wait.2.10s`: the wait before retry tier 2, 10 seconds long."""
    return f"{service}.wait.{tier}.{format_delay(delay)}"


def format_delay(seconds: float) -> str:
    """`10s`, or `1500ms` where whole seconds would round."""
    milliseconds = round(seconds * 1000)
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def dead_letter_queue_name(service: str) -> str:
    return f"{service}.dlq"


def dead_letter_exchange_name(service: str) -> str:
    return f"{service}.dlx"


def backoff_exchange_name(service: str) -> str:
    """Where every consuming queue dead-letters a failed message, under its own name."""
    return f"{service}.backoff"


def redeliver_exchange_name(service: str) -> str:
    """Delivers into one of the service's consuming queues by its name: waits expiring,
    resubmissions and replays."""
    return f"{service}.redeliver"


class Drift(NamedTuple):
    """A queue the broker holds with other arguments than this code declares: used as it is
    (consumed, or waited in), until `orderctl topology apply` migrates it."""

    queue: str
    difference: str


def _dead_letter_through(exchange: str, routing_key: str) -> dict[str, str]:
    """Arguments that dead-letter, at least once, into `exchange` under `routing_key`."""
    return {
        "x-dead-letter-exchange": exchange,
        "x-dead-letter-routing-key": routing_key,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",  # at-least-once needs it, or stays at-most-once silently
    }


def consuming_queue_arguments(service: str, name: str) -> dict[str, object]:
    """The same for every consuming queue of every release: no retry setting is in them."""
    return {
        "x-delivery-limit": DELIVERY_LIMIT,
        **_dead_letter_through(backoff_exchange_name(service), name),
    }


def wait_queue_arguments(service: str, tier: int, delay: float) -> dict[str, object]:
    return {
        "x-message-ttl": round(delay * 1000),
        **_dead_letter_through(redeliver_exchange_name(service), retry_queue_name(service, tier)),
    }


@dataclass(frozen=True)
class ServiceTopology:
    service: str
    routing_keys: tuple[str, ...]
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    retry_tiers: int = 0
    """Retry queues consumed; more than the delays when an earlier layout had more tiers and
    its retry queues still exist. 0: one per delay."""

    def __post_init__(self) -> None:
        if not self.retry_delays or min(self.retry_delays) <= 0:
            raise ValueError("retry_delays needs at least one positive delay")
        if self.retry_tiers < len(self.retry_delays):
            object.__setattr__(self, "retry_tiers", len(self.retry_delays))

    @property
    def work_queue(self) -> RabbitQueue:
        return self._consuming_queue(work_queue_name(self.service))

    @property
    def retry_queues(self) -> list[RabbitQueue]:
        return [
            self._consuming_queue(retry_queue_name(self.service, tier))
            for tier in range(1, self.retry_tiers + 1)
        ]

    @property
    def retry_queue_after_the_last(self) -> str:
        return retry_queue_name(self.service, self.retry_tiers + 1)

    @property
    def consuming_queues(self) -> list[RabbitQueue]:
        return [self.work_queue, *self.retry_queues]

    def delay_after(self, queue_index: int) -> float:
        """The backoff after a failure in `consuming_queues[queue_index]`."""
        return self.retry_delays[min(queue_index, len(self.retry_delays) - 1)]

    @property
    def wait_queues(self) -> list[RabbitQueue]:
        return [
            RabbitQueue(
                wait_queue_name(self.service, tier, delay),
                queue_type=QueueType.QUORUM,
                arguments=wait_queue_arguments(self.service, tier, delay),
            )
            for tier, delay in enumerate(self.retry_delays, start=1)
        ]

    @property
    def backoff_routes(self) -> dict[str, str]:
        """Consuming queue -> the wait queue its failures go to."""
        waits = [queue.name for queue in self.wait_queues]
        return {
            queue.name: waits[min(index, len(waits) - 1)]
            for index, queue in enumerate(self.consuming_queues)
        }

    @property
    def backoff_routing_exchange(self) -> str:
        """`<svc>.backoff.<fingerprint>`: one per layout of `backoff_routes`."""
        layout = repr(sorted(self.backoff_routes.items())).encode()
        return f"{backoff_exchange_name(self.service)}.{hashlib.sha256(layout).hexdigest()[:8]}"

    @property
    def dead_letter_exchange(self) -> RabbitExchange:
        return RabbitExchange(
            dead_letter_exchange_name(self.service), type=ExchangeType.FANOUT, durable=True
        )

    @property
    def dead_letter_queue(self) -> RabbitQueue:
        return RabbitQueue(dead_letter_queue_name(self.service), queue_type=QueueType.QUORUM)

    @property
    def all_queues(self) -> Sequence[RabbitQueue]:
        return [*self.consuming_queues, *self.wait_queues, self.dead_letter_queue]

    def _consuming_queue(self, name: str) -> RabbitQueue:
        """`declare=False`: a subscriber only checks that its queue exists; `declare` made it,
        and a queue from an earlier release is consumed as it is (`Drift`)."""
        return RabbitQueue(
            name,
            queue_type=QueueType.QUORUM,
            declare=False,
            arguments=consuming_queue_arguments(self.service, name),
        )

    async def declare(self, channel: AbstractChannel) -> "DeclaredTopology":
        """Declare exchanges, queues and bindings on `channel`; safe to repeat.

        `events` is declared on a channel of its own (`declare_events_exchange`), so a user
        that may not configure it (production) still declares the rest here.

        Bindings converge on what this deploy reads: an event version it no longer accepts
        (after a rollback, say) is unbound, so it never reaches a consumer that would only
        dead-letter it.

        Use a channel nobody consumes on, never `RabbitBroker.declare_queue`: FastStream
        caches each queue it declares by its definition alone, whatever the channel, and a
        subscriber finding its queue in that cache consumes on the channel it was declared
        on instead of opening its own `Channel(prefetch_count=N)`.
        """
        await declare_events_exchange(channel)
        connection = (await channel.get_underlay_channel()).connection
        topology = self
        while await _queue_exists(connection, topology.retry_queue_after_the_last):
            topology = replace(topology, retry_tiers=topology.retry_tiers + 1)
        dlx = await _declare_exchange(channel, topology.dead_letter_exchange)
        dlq = await _declare_queue(channel, topology.dead_letter_queue)
        await dlq.bind(dlx, routing_key="")
        redeliver = await channel.declare_exchange(
            redeliver_exchange_name(self.service), ExchangeType.DIRECT.value, durable=True
        )
        drift = []
        for queue in topology.consuming_queues:
            difference = await _declare_queue_as_found(channel, queue)
            if difference is not None:
                drift.append(Drift(queue.name, difference))
            consuming = await channel.get_queue(queue.name, ensure=False)
            await consuming.bind(redeliver, routing_key=queue.name)
        for queue in topology.wait_queues:
            difference = await _declare_queue_as_found(channel, queue)
            if difference is not None:
                drift.append(Drift(queue.name, difference))
        await topology._route_backoff(channel)
        work = await channel.get_queue(topology.work_queue.name, ensure=False)
        events = EVENTS_EXCHANGE.name
        for key in topology.routing_keys:
            await work.bind(events, routing_key=key)
        for key in EVENTS_BY_ROUTING_KEY.keys() - set(topology.routing_keys):
            await work.unbind(events, routing_key=key)
        return DeclaredTopology(topology, drift)

    async def _route_backoff(self, channel: AbstractChannel) -> None:
        """Bind `<svc>.backoff` to this layout's routing exchange alone.

        Bindings cannot be listed over AMQP, so an earlier layout's binding could never be
        named to be unbound: a new layout starts `<svc>.backoff` afresh instead (deleting an
        exchange drops its bindings). Which layout the broker holds is kept in the arguments
        of a queue that holds nothing, `<svc>.backoff.layout`: RabbitMQ compares a queue's
        arguments when it is declared again (it does not compare an exchange's), so a declare
        refused there means another layout. A message dead-lettered during the moment
        `<svc>.backoff` is missing is not lost: at-least-once dead-lettering keeps it in its
        queue and routes it again (RabbitMQ 3.10: about 3 minutes later)."""
        backoff = backoff_exchange_name(self.service)
        marker = self._layout_marker
        other_layout = await _declare_queue_as_found(channel, marker, passive_if_refused=False)
        if other_layout:
            await channel.exchange_delete(backoff)
        source = await channel.declare_exchange(backoff, ExchangeType.FANOUT.value, durable=True)
        routes = await channel.declare_exchange(
            self.backoff_routing_exchange, ExchangeType.DIRECT.value, durable=True
        )
        for failed_in, wait in self.backoff_routes.items():
            queue = await channel.get_queue(wait, ensure=False)
            await queue.bind(routes, routing_key=failed_in)
        await routes.bind(source)
        if other_layout:  # last: a start interrupted before this starts afresh again
            await channel.queue_delete(marker.name)
            await _declare_queue(channel, marker)

    @property
    def _layout_marker(self) -> RabbitQueue:
        fingerprint = int(self.backoff_routing_exchange.rsplit(".", 1)[1], 16)
        return RabbitQueue(
            f"{backoff_exchange_name(self.service)}.layout",
            durable=True,
            arguments={"x-max-length": 0, "x-max-length-bytes": fingerprint},
        )


@dataclass(frozen=True)
class DeclaredTopology:
    """What `ServiceTopology.declare` found and made: the topology consumed, with every retry
    queue the broker still holds, and the queues held with other arguments."""

    topology: ServiceTopology
    drift: list[Drift]


async def declare_events_exchange(channel: AbstractChannel) -> None:
    """Declare `events` on a channel of its own, opened on `channel`'s connection: a user with
    full rights (development) creates it; one the broker refuses (ACCESS_REFUSED, which closes
    the channel) only checks, passively on another channel, that provisioning declared it."""
    connection = (await channel.get_underlay_channel()).connection
    exchange = EVENTS_EXCHANGE
    probe = await connection.channel(publisher_confirms=False)
    try:
        await probe.exchange_declare(
            exchange.name, exchange_type=exchange.type.value, durable=exchange.durable
        )
        return
    except ChannelAccessRefused:
        probe = await connection.channel(publisher_confirms=False)
        try:
            await probe.exchange_declare(exchange.name, passive=True)
        except ChannelNotFoundEntity as exc:
            raise EventsExchangeMissing(
                f"the exchange {exchange.name!r} does not exist and this user may not declare "
                "it: provision the broker first (orderctl provision rabbitmq)"
            ) from exc
    finally:
        if not probe.is_closed:
            await probe.close()


async def _declare_exchange(channel: AbstractChannel, exchange: RabbitExchange) -> AbstractExchange:
    return await channel.declare_exchange(
        exchange.name,
        exchange.type.value,
        durable=exchange.durable,
        auto_delete=exchange.auto_delete,
        arguments=exchange.arguments,
    )


async def _declare_queue(channel: AbstractChannel, queue: RabbitQueue) -> AbstractQueue:
    return await channel.declare_queue(
        queue.name,
        durable=queue.durable,
        exclusive=queue.exclusive,
        auto_delete=queue.auto_delete,
        arguments=queue.arguments,
    )


async def _declare_queue_as_found(
    channel: AbstractChannel, queue: RabbitQueue, *, passive_if_refused: bool = True
) -> str | None:
    """Declare `queue`, or, where the broker holds it with other arguments, say how they
    differ (and, `passive_if_refused`, take it as it is). RabbitMQ refuses such a declaration
    with PRECONDITION_FAILED, closing the channel it came on: a channel of its own is tried
    first."""
    connection = (await channel.get_underlay_channel()).connection
    probe = await connection.channel(publisher_confirms=False)
    try:
        await probe.queue_declare(queue.name, durable=True, arguments=queue.arguments)
    except ChannelPreconditionFailed as exc:
        if passive_if_refused:
            await channel.declare_queue(queue.name, passive=True)
        return str(exc)
    finally:
        if not probe.is_closed:
            await probe.close()
    await _declare_queue(channel, queue)
    return None


async def _queue_exists(connection: Any, name: str) -> bool:
    return await _exists(connection, lambda probe: probe.queue_declare(name, passive=True))


async def _exists(connection: Any, declare_passively: Any) -> bool:
    """A passive declare on a channel of its own: a miss closes the channel."""
    probe = await connection.channel(publisher_confirms=False)
    try:
        await declare_passively(probe)
    except ChannelNotFoundEntity:
        return False
    finally:
        if not probe.is_closed:
            await probe.close()
    return True
