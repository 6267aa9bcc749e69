"""How far each order has got, seen on the broker and in the SMTP sink's mailbox alone.

One exclusive, auto-acknowledged queue is bound to the `events` exchange for the events that
mark an order's progress; each is timestamped on arrival under its `order_id`. The email
service publishes no event, so its confirmation is timestamped when the mail lands in the
sink's mbox, which is read as it grows. The services are asked nothing and none of their
tables is read, so observing adds no load to them (the broker routes one more copy of those
events).
"""

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from servicekit.topology import EVENTS_EXCHANGE

MILESTONES: dict[str, tuple[str, ...]] = {
    "confirmed": ("order.confirmed.v1",),
    "reserved": ("stock.reserved.v1",),
    "rejected": ("stock.rejected.v1",),
    "shipped": ("order.shipped.v1",),
}
"""Each step of an order's life seen on the broker and the routing keys of the events that
mark it: the one place to change when such an event is renamed, versioned or retired."""

EMAILED = "emailed"
"""The step seen in the mailbox: the order's confirmation mail reached the SMTP sink."""

CONFIRMATION_SUBJECT = re.compile(
    rb"^Subject: Your order is confirmed: (?P<order_id>[0-9a-f-]{36})\r?$", re.MULTILINE
)
"""The subject line of a confirmation mail, as the email service writes it."""

COMPLETED = ("confirmed", "reserved", EMAILED)
"""An order is complete once confirmed, its stock reserved and its confirmation emailed (its
shipment is prepared on `order.created`; the benchmark waits for every queue to drain before
it reads the CPU, so that work is counted too)."""

THROUGH = {
    "completed": COMPLETED,
    "shipped": ("confirmed", "reserved", "shipped"),
}
"""What `--through` waits for. Through shipped the confirmation email is not awaited: email
skips a confirmation that arrives after the order shipped ("superseded" by the dispatch
notice), which a short dispatch delay makes likely."""

ENDS = ("rejected", "shipped")
"""Steps after which an order passes nothing more of what is awaited: it is settled."""


class Tap:
    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.seen: dict[str, dict[str, float]] = {step: {} for step in (*MILESTONES, EMAILED)}
        """step -> order id -> when its event first arrived."""
        self.redelivered = 0
        """Events of a step already seen for that order (a republished outbox row, say)."""
        self.last_arrival: float | None = None
        self._steps = {key: step for step, keys in MILESTONES.items() for key in keys}

    def record(self, routing_key: str, body: bytes, at: float) -> None:
        step = self._steps.get(routing_key)
        order_id = json.loads(body).get("order_id") if step else None
        if step is None or order_id is None:
            return
        self._arrived(step, order_id, at)

    def record_mail(self, text: bytes, at: float) -> None:
        """Note each confirmation in `text`, whole lines of the mailbox."""
        for found in CONFIRMATION_SUBJECT.finditer(text):
            self._arrived(EMAILED, found["order_id"].decode(), at)

    def _arrived(self, step: str, order_id: str, at: float) -> None:
        self.last_arrival = at
        if order_id in self.seen[step]:
            self.redelivered += 1
        else:
            self.seen[step][order_id] = at

    def reached(self, order_id: str, steps: Iterable[str]) -> float | None:
        """When the order had passed every one of `steps` (the last of their arrivals); None
        while one is missing."""
        times = [self.seen[step].get(order_id) for step in steps]
        return None if None in times else max(times)

    def settled(self, order_id: str, steps: Iterable[str]) -> bool:
        """Whether the order passed `steps`, or a step after which it never will."""
        ended = any(order_id in self.seen[step] for step in ENDS)
        return ended or self.reached(order_id, steps) is not None

    async def start(self, connection: AbstractConnection) -> None:
        """Bind the queue; from now on every marking event is recorded, until the connection
        closes (the queue goes with it)."""
        channel = await connection.channel()
        exchange = await channel.get_exchange(EVENTS_EXCHANGE.name)  # declared by the services
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in self._steps:
            await queue.bind(exchange, routing_key=key)
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.record(message.routing_key or "", message.body, self.clock())

    async def watch_mailbox(self, mbox: Path, interval: float = 0.05) -> None:
        """Record the confirmations the SMTP sink appends to `mbox`, until cancelled."""
        appended = Appended(mbox)
        while True:
            self.record_mail(appended.lines(), self.clock())
            await asyncio.sleep(interval)


class Appended:
    """The whole lines written to a file since the last look: a line still being written
    waits for the next."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""

    def lines(self) -> bytes:
        if not self._path.exists():
            return b""
        with self._path.open("rb") as file:
            file.seek(self._offset)
            new = file.read()
        self._offset += len(new)
        whole, _, self._partial = (self._partial + new).rpartition(b"\n")
        return whole
