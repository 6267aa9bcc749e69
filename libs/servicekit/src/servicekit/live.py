"""Events as they happen, for views that follow them live (a status stream, a console).

Every process that serves such views has a queue of its own on the broker, and fans what
arrives there out to its listeners through a `LiveHub`: a listener sees each event
published while it listens, whichever replica the client reached. The queue is bound to
`events` only while someone listens (and `UNBIND_AFTER` seconds more), so a process that
nobody watches is sent no copy of each event: with N replicas, every event would
otherwise cost N deliveries more. It is a view, not work: nothing is acknowledged,
retried or kept. What is published while this process is disconnected from the broker it
never sees, so a view starts from the current state it reads, then applies what the hub
delivers.
"""

import asyncio
import contextlib
import logging
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from uuid import UUID

from aio_pika import RobustQueue
from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage

from contracts import EVENTS_BY_ROUTING_KEY, Event

from . import wire
from .consumer import PermanentFailure, decode_event
from .topology import EVENTS_EXCHANGE

log = logging.getLogger(__name__)

UNBIND_AFTER = 30.0
"""Seconds the live queue stays bound after its last listener leaves: a page that reloads,
or a client that reconnects, finds it bound still."""

LISTENER_BACKLOG = 256
"""Events a listener may have waiting before the hub drops it: far more than one order
ever has, so only a listener that has stopped reading reaches it."""


class LiveUnavailable(Exception):
    """The live queue could not be bound to `events` (the broker connection is down): a
    listener would hear nothing."""


class FellBehind(Exception):
    """The listener let `LISTENER_BACKLOG` events pile up, so the hub dropped it: what it
    would read next is no longer every event. Start again from the current state."""


class ListenerQueue(asyncio.Queue[Event]):
    """A listener's events; `get` raises FellBehind once the hub has dropped it."""

    def __init__(self, backlog: int) -> None:
        super().__init__(maxsize=backlog)
        self.dropped = False

    def get_nowait(self) -> Event:
        # `get` ends in `get_nowait`. A dropped queue is full, so no `get` is waiting on it.
        if self.dropped:
            raise FellBehind(f"more than {self.maxsize} events were waiting unread")
        return super().get_nowait()


class LiveHub:
    """Fans the events one process receives out to its listeners, by order."""

    def __init__(self, backlog: int = LISTENER_BACKLOG) -> None:
        self._backlog = backlog
        self._listeners: defaultdict[UUID | None, set[ListenerQueue]] = defaultdict(set)
        self._binding: OnDemandBinding | None = None

    @contextlib.asynccontextmanager
    async def listen(self, order_id: UUID | None = None) -> AsyncIterator[asyncio.Queue[Event]]:
        """A queue of the events about `order_id` (every event, when None) delivered while the
        block runs. Its `get` raises FellBehind if the listener stops keeping up. Entering
        returns once the process's live queue is bound (LiveUnavailable if it cannot be),
        so what is published from then on is heard."""
        queue = ListenerQueue(self._backlog)
        self._listeners[order_id].add(queue)
        try:
            if self._binding is not None:
                await self._binding.hold()
            yield queue
        finally:
            self._forget(order_id, queue)
            if self._binding is not None and self.idle:
                self._binding.release()

    def bind_with(self, binding: "OnDemandBinding") -> None:
        """Hold `binding` while anyone listens (subscribe_live's part)."""
        self._binding = binding

    def deliver(self, event: Event) -> None:
        """Hand `event` to each of its listeners, without waiting for any of them."""
        order_id = getattr(event, "order_id", None)
        for key in {order_id, None}:
            for queue in list(self._listeners.get(key, ())):
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    queue.dropped = True
                    self._forget(key, queue)
                    log.warning(
                        "live listener on %s dropped: %d events waiting unread",
                        key or "every order",
                        queue.qsize(),
                    )

    @property
    def idle(self) -> bool:
        """No one listens: an event needs no decoding."""
        return not self._listeners

    @property
    def listeners(self) -> int:
        return sum(map(len, self._listeners.values()))

    def _forget(self, order_id: UUID | None, queue: ListenerQueue) -> None:
        listeners = self._listeners.get(order_id)
        if listeners is not None:
            listeners.discard(queue)
            if not listeners:
                del self._listeners[order_id]


def live_queue_name(owner: str) -> str:
    return f"{owner}.live.{secrets.token_hex(8)}"


class OnDemandBinding:
    """Binds a live queue to `events` under its routing keys while its hub has listeners,
    and unbinds it `unbind_after` seconds after the last one left (unless another came)."""

    def __init__(
        self,
        broker: RabbitBroker,
        queue: RabbitQueue,
        routing_keys: Iterable[str],
        hub: LiveHub,
        unbind_after: float,
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._routing_keys = tuple(routing_keys)
        self._hub = hub
        self._unbind_after = unbind_after
        self._lock = asyncio.Lock()
        self._bound_on: RobustQueue | None = None
        """The queue object the bindings were made on: it restores them after a reconnect,
        so they are undone on it too."""
        self._unbinding: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def bound(self) -> bool:
        return self._bound_on is not None

    async def hold(self) -> None:
        """Return once the queue is bound; LiveUnavailable if the broker refuses or is gone."""
        if self._unbinding is not None:
            self._unbinding.cancel()
            self._unbinding = None
        async with self._lock:
            if self._bound_on is not None:
                return
            try:
                queue = await self._broker.declare_queue(self._queue)
                for key in self._routing_keys:
                    await queue.bind(EVENTS_EXCHANGE.name, key)
            except Exception as exc:  # noqa: BLE001 - whatever the cause, nothing would be heard
                raise LiveUnavailable(f"live queue not bound to events: {exc!r}") from exc
            self._bound_on = queue
            log.debug("live: %s bound to events", self._queue.name)

    def release(self) -> None:
        """The hub has no listener left: unbind later, if it still has none then."""
        if self._unbinding is None:
            self._unbinding = asyncio.get_running_loop().call_later(
                self._unbind_after, self._start_unbinding
            )

    def _start_unbinding(self) -> None:
        self._unbinding = None
        task = asyncio.create_task(self._unbind_if_idle())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _unbind_if_idle(self) -> None:
        async with self._lock:
            if (queue := self._bound_on) is None or not self._hub.idle:
                return
            try:
                for key in self._routing_keys:
                    await queue.unbind(EVENTS_EXCHANGE.name, key)
            except Exception as exc:  # noqa: BLE001 - a cost, not a fault: copies keep coming
                log.warning(
                    "live: %s not unbound (%r): events keep arriving unheard until the next "
                    "listener leaves",
                    self._queue.name,
                    exc,
                )
                return
            self._bound_on = None
            log.debug("live: %s unbound, no one listens", self._queue.name)


def subscribe_live(
    broker: RabbitBroker,
    hub: LiveHub,
    *,
    owner: str,
    routing_keys: Iterable[str],
    unbind_after: float = UNBIND_AFTER,
) -> OnDemandBinding:
    """Register, before broker.start(), a consumer on a queue of this process's own
    (`<owner>.live.<random hex>`: exclusive, auto-delete, not durable, so it goes with the
    process; named under the owner so least-privilege users may declare it), and make `hub`
    bind it to `events` under `routing_keys` while it has listeners. Each message is
    decoded into its contract class and delivered to the hub, anything undecodable skipped
    with a DEBUG log. Nothing is acknowledged (no_ack): it is a view, not work. The handler
    takes the message alone, as on every service's broker (`apply_types=False`). Kept out
    of the AsyncAPI document: no other service depends on it, and its name changes with
    every process.
    """
    wire.tolerate_undecodable_text()  # a message not UTF-8 must not drop the connection
    queue = RabbitQueue(live_queue_name(owner), durable=False, exclusive=True, auto_delete=True)

    async def on_event(message: RabbitMessage) -> None:
        if hub.idle:
            return
        try:
            event = decode_event(message.body, EVENTS_BY_ROUTING_KEY)
        except PermanentFailure as exc:
            log.debug("live: message %s skipped: %s", message.message_id, exc)
            return
        hub.deliver(event)

    broker.subscriber(
        queue,
        channel=Channel(),
        ack_policy=AckPolicy.ACK_FIRST,
        decoder=_undecoded,
        include_in_schema=False,
    )(on_event)
    binding = OnDemandBinding(broker, queue, routing_keys, hub, unbind_after)
    hub.bind_with(binding)
    return binding


async def _undecoded(message: RabbitMessage) -> RabbitMessage:
    """The message itself, its body undecoded: `decode_event` says what is wrong with one
    that is not an event, where FastStream's JSON decoding would fail before the handler."""
    return message
