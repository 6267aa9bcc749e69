"""`orderctl topology apply`: make the broker hold what a plan says, without losing a message.

Every step can be interrupted and run again: each looks at what the broker holds now, and a
holding queue `<queue>.migrating` left by an interrupted migration is picked up where it was.

Emptiness is judged by the management statistics, which lag the queue by seconds, so a
queue counts as empty only once they have shown it empty for `quiet_period`. Queues are
deleted plainly then: a quorum queue's `queue.delete if_empty` is NOT_IMPLEMENTED on
RabbitMQ 3.10, and closes the connection.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import ChannelNotFoundEntity
from faststream.rabbit import QueueType

from servicekit.topology import EVENTS_EXCHANGE, ServiceTopology, redeliver_exchange_name

from .broker import republished
from .dead_letters import DELIVERY_COUNT
from .management import ListedBinding, ManagementApi
from .topology import HOLDING_SUFFIX, ServicePlan, declared_arguments, holding_queue_name

QUIET_PERIOD = 10.0
"""Seconds the statistics must show a queue empty (they are emitted every 5 s by default)."""
POLL_INTERVAL = 1.0
PUBLISH_TIMEOUT = 10.0


@dataclass
class ApplyResult:
    done: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    """What could not be done before the timeout, e.g. a wait queue still holding messages."""


class TopologyApplier:
    def __init__(
        self,
        connection: AbstractConnection,
        api: ManagementApi,
        *,
        timeout: float,
        quiet_period: float = QUIET_PERIOD,
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        self._connection = connection
        self._api = api
        self._deadline = time.monotonic() + timeout
        self._quiet_period = quiet_period
        self._say = say
        self.result = ApplyResult()

    def _done(self, what: str) -> None:
        self.result.done.append(what)
        self._say(what)

    async def apply(self, plan: ServicePlan) -> None:
        """Missing parts first (the new layout routes before the old one goes), then obsolete
        routing exchanges (nothing reaches the old waits after that), the old waits once
        empty, and last the consuming queues to migrate."""
        async with await self._connection.channel(publisher_confirms=False) as channel:
            if plan.missing_queues or plan.missing_exchanges:
                await plan.topology.declare(channel)
                self._done(f"declared what {plan.service} misses")
            for exchange in plan.obsolete_routing_exchanges:
                await channel.exchange_delete(exchange)
                self._done(f"deleted exchange {exchange}")
        await asyncio.gather(*(self._delete_once_empty(wait.name) for wait in plan.obsolete_waits))
        migrating = [drifted.queue.name for drifted in plan.drifted]
        for holding in plan.holding:
            queue = holding.name.removesuffix(HOLDING_SUFFIX)
            if queue not in migrating:
                migrating.append(queue)
        for queue in migrating:
            await self._migrate(plan, queue)

    async def _delete_once_empty(self, queue: str) -> None:
        if not await self._until_empty(queue):
            self.result.left.append(f"{queue} still holds messages: not deleted")
            return
        await self._delete_queue(queue)
        self._done(f"deleted queue {queue}")

    async def _migrate(self, plan: ServicePlan, queue: str) -> None:
        """Park `queue`'s inflow and messages in `<queue>.migrating`, declare `queue` again as
        the code does, then move everything back."""
        holding = holding_queue_name(queue)
        listing = await self._api.listing(queue)
        if queue in listing.queues and queue in {d.queue.name for d in plan.drifted}:
            inbound = _inbound(listing.bindings_to(queue), plan.topology, queue)
            async with await self._connection.channel(publisher_confirms=False) as channel:
                await channel.declare_queue(
                    holding, durable=True, arguments={"x-queue-type": QueueType.QUORUM.value}
                )
                await _move_bindings(channel, inbound, queue, holding)
            self._say(f"{queue}: inflow parked in {holding}")
            if not await self._until_empty(queue, lambda: self._move(queue, holding)):
                self.result.left.append(f"{queue} did not drain into {holding}: left as it was")
                return
            await self._delete_queue(queue)
            self._say(f"{queue}: deleted, drained into {holding}")
            listing = await self._api.listing(queue)
        if queue not in listing.queues and not await self._until_consumers_cancelled():
            self.result.left.append(f"{queue}: deleted; no time left to declare it again")
            return
        inbound = _inbound(listing.bindings_to(holding), plan.topology, queue)
        async with await self._connection.channel(publisher_confirms=False) as channel:
            # By itself first: `declare` keeps a retry queue beyond the layout only if it exists.
            arguments = declared_arguments(plan.topology, queue)
            await channel.declare_queue(queue, durable=True, arguments=arguments)
            await plan.topology.declare(channel)
            await _move_bindings(channel, inbound, holding, queue)
        if not await self._until_empty(holding, lambda: self._move(holding, queue)):
            self.result.left.append(f"{holding} did not drain into {queue}: run apply again")
            return
        await self._delete_queue(holding)
        self._done(f"migrated {queue} to the code's arguments")

    async def _until_empty(
        self, queue: str, meanwhile: Callable[[], Awaitable[int]] | None = None
    ) -> bool:
        """True once `queue` is gone or has shown no message, ready or unacknowledged, for
        the quiet period; False at the deadline. `meanwhile` moves messages, and says how
        many it moved."""
        quiet_since: float | None = None
        while True:
            moved = await meanwhile() if meanwhile else 0
            stats = await self._api.queue(queue)
            if stats is None:
                return True
            now = time.monotonic()
            if moved or stats.messages or await self._ready(queue):
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= self._quiet_period:
                return True
            if now > self._deadline:
                return False
            await asyncio.sleep(POLL_INTERVAL)

    async def _until_consumers_cancelled(self) -> bool:
        """RabbitMQ 3.10 cancels the consumers of a deleted quorum queue about a second later
        (measured), and the client consumes again by itself once the queue is back (aio-pika's
        robust channel). A queue declared again before that keeps them, silently: the broker
        hands them its messages, which never reach the client and stay unacknowledged. Its
        consumer listing does not tell (it drops them at once, and later shows ghosts), so the
        queue is declared again only after a quiet period."""
        if time.monotonic() + self._quiet_period > self._deadline:
            return False
        await asyncio.sleep(self._quiet_period)
        return True

    async def _ready(self, queue: str) -> int:
        """Ready messages now, from a passive declare: exact where the statistics lag."""
        async with await self._connection.channel(publisher_confirms=False) as channel:
            try:
                declared = await channel.declare_queue(queue, passive=True)
            except ChannelNotFoundEntity:
                return 0
        return declared.declaration_result.message_count or 0

    async def _move(self, source: str, destination: str) -> int:
        """Move what is ready in `source` to `destination`, each message acknowledged only once
        the broker has confirmed its copy. Returns how many moved."""
        moved = 0
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        async with channel:
            queue = await channel.declare_queue(source, passive=True)
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                await _publish_copy(channel, message, destination)
                await message.ack()
                moved += 1
        return moved

    async def _delete_queue(self, queue: str) -> None:
        async with await self._connection.channel(publisher_confirms=False) as channel:
            await channel.queue_delete(queue)


def _inbound(
    bindings: list[ListedBinding], topology: ServiceTopology, queue: str
) -> list[ListedBinding]:
    """A queue's inflow: the bindings listed, and for a consuming queue `<svc>.redeliver`
    under its name in any case (an earlier layout fed it through the default exchange)."""
    keyed = {(binding.source, binding.routing_key): binding for binding in bindings}
    if queue not in {wait.name for wait in topology.wait_queues}:
        redeliver = ListedBinding(redeliver_exchange_name(topology.service), queue, queue)
        keyed.setdefault((redeliver.source, redeliver.routing_key), redeliver)
    return sorted(keyed.values(), key=lambda b: (b.source != EVENTS_EXCHANGE.name, b.routing_key))


async def _move_bindings(
    channel: AbstractChannel, bindings: list[ListedBinding], source: str, destination: str
) -> None:
    """Bind `destination` as `source` is, then unbind `source`: for a moment a message may
    reach both (consumers tolerate duplicates), never neither."""
    to, away = (
        await channel.get_queue(destination, ensure=False),
        await channel.get_queue(source, ensure=False),
    )
    for binding in bindings:
        await to.bind(binding.source, binding.routing_key, arguments=binding.arguments)
    for binding in bindings:
        await away.unbind(binding.source, binding.routing_key, arguments=binding.arguments)


async def _publish_copy(
    channel: AbstractChannel, message: AbstractIncomingMessage, queue: str
) -> None:
    """The same body, properties and headers (`x-death` included, so attempts still count),
    through the default exchange to `queue` by name."""
    headers = {k: v for k, v in (message.headers or {}).items() if k != DELIVERY_COUNT}
    await channel.default_exchange.publish(
        republished(message, headers),
        routing_key=queue,
        mandatory=True,
        timeout=PUBLISH_TIMEOUT,
    )
