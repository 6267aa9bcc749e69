"""The load: orders placed with POST /orders, in a closed loop or an open loop.

Closed loop: `concurrency` clients, each placing its next order as soon as its last one is
answered; a latency runs from the request's start. Open loop: requests start on a fixed
schedule, `rate` a second, whether or not earlier ones were answered; a latency runs from
the moment the request was due, so time spent waiting for the load generator itself (a busy
event loop, a full connection pool) counts against the system, as a customer would see it.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx

ADDRESS = {
    "name": "Bench",
    "line1": "1 Load St",
    "city": "Paris",
    "postal_code": "75001",
    "country": "FR",
}


@dataclass(frozen=True)
class Outcome:
    status: int | None = None
    """The HTTP status; None when the request failed below HTTP."""
    order_id: str | None = None
    error: str | None = None
    """The transport error's name (connect, read timeout, ...)."""


@dataclass
class Attempt:
    index: int
    due: float
    """When the request was due: its place in the schedule (open loop), or its start."""
    started: float
    finished: float | None = None
    outcome: Outcome | None = None

    @property
    def latency(self) -> float | None:
        return None if self.finished is None else self.finished - self.due

    @property
    def accepted(self) -> bool:
        return self.outcome is not None and self.outcome.order_id is not None


Send = Callable[[int], Awaitable[Outcome]]
"""Places the order of that index; never raises for a failed request (an `Outcome` says it)."""


class Load:
    """Every request placed so far, readable while the load runs (progress)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.attempts: list[Attempt] = []

    @property
    def accepted(self) -> list[Attempt]:
        return [a for a in self.attempts if a.accepted]

    async def attempt(self, send: Send, index: int, due: float | None = None) -> None:
        started = self.clock()
        attempt = Attempt(index, started if due is None else due, started)
        self.attempts.append(attempt)
        attempt.outcome = await send(index)
        attempt.finished = self.clock()

    async def closed_loop(self, send: Send, *, orders: int, concurrency: int) -> None:
        indices = iter(range(orders))

        async def client() -> None:
            for index in indices:  # shared: each client takes the next order not yet placed
                await self.attempt(send, index)

        await asyncio.gather(*(client() for _ in range(concurrency)))

    async def open_loop(self, send: Send, *, rate: float, duration: float) -> None:
        start = self.clock()
        requests = []
        for index in range(round(rate * duration)):
            due = start + index / rate
            if (wait := due - self.clock()) > 0:
                await asyncio.sleep(wait)
            requests.append(asyncio.create_task(self.attempt(send, index, due)))
        await asyncio.gather(*requests)


def order_body(sku: str) -> dict:
    return {
        "customer_email": "bench@example.com",
        "customer_name": "Bench",
        "items": [{"sku": sku, "name": f"Product {sku}", "quantity": 1, "unit_price": "1.00"}],
        "shipping_address": ADDRESS,
    }


def order_sender(
    orders: Sequence[httpx.AsyncClient], skus: list[str], idempotency_prefix: str | None = None
) -> Send:
    """POST /orders for order `index` with the client `index % len(orders)` (so to the
    replica `index % replicas` when the clients cycle through the replicas), on SKU
    `index % len(skus)`; with an Idempotency-Key `<idempotency_prefix>-<index>` when a prefix
    is given."""
    bodies = [order_body(sku) for sku in skus]

    async def send(index: int) -> Outcome:
        headers = {"Idempotency-Key": f"{idempotency_prefix}-{index}"} if idempotency_prefix else {}
        try:
            response = await orders[index % len(orders)].post(
                "/orders", json=bodies[index % len(bodies)], headers=headers
            )
        except httpx.TransportError as exc:  # the order may or may not exist: counted, not retried
            return Outcome(error=type(exc).__name__)
        if response.status_code != 202:
            return Outcome(status=response.status_code)
        return Outcome(status=202, order_id=response.json()["order_id"])

    return send


async def stock(inventory: httpx.AsyncClient, skus: list[str], each: int) -> None:
    """Put `each` units of every SKU in stock."""
    for sku in skus:
        response = await inventory.put(f"/stock/{sku}", json={"available": each})
        response.raise_for_status()


@dataclass
class Streams:
    """Status streams (GET /orders/{order_id}/events) held open, as customers watching their
    orders keep them, each read as its events come."""

    watched: list[str] = field(default_factory=list)
    """The orders followed."""
    opened: int = 0
    open: int = 0
    events: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    """Streams refused (by HTTP status) or broken (by transport error)."""

    async def hold(self, client: httpx.AsyncClient, order_id: str, started: asyncio.Event) -> None:
        """Follow the order until its stream ends (or the task is cancelled); `started` is
        set once the stream has opened, or failed to."""
        try:
            async with client.stream("GET", f"/orders/{order_id}/events") as response:
                if response.status_code != 200:
                    self.failed[str(response.status_code)] += 1
                    return
                self.opened += 1
                self.open += 1
                started.set()
                try:
                    async for line in response.aiter_lines():
                        self.events += line.startswith("event:")
                finally:
                    self.open -= 1
        except httpx.TransportError as exc:
            self.failed[type(exc).__name__] += 1
        finally:
            started.set()
