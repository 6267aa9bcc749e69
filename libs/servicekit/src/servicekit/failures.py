"""What a failed message carries: broker-written `x-death` history and our failure headers.

The consumer writes these on a dead-lettered message; the operator CLI reads them. Keeping
both sides here means a header is named in one place.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

FAILURE_SERVICE = "x-failure-service"
FAILURE_REASON = "x-failure-reason"
FAILURE_EXCEPTION = "x-failure-exception"
FAILURE_ATTEMPTS = "x-failure-attempts"
FIRST_FAILURE_AT = "x-first-failure-at"
LAST_FAILURE_AT = "x-last-failure-at"
ORIGINAL_EXCHANGE = "x-original-exchange"
ORIGINAL_ROUTING_KEY = "x-original-routing-key"
REPLAY_COUNT = "x-replay-count"
REPLAYED_AT = "x-replayed-at"

COUNTED_DEATHS = ("rejected", "delivery_limit")
"""Dead-letterings that mean a delivery failed; `expired` only ends a backoff wait."""

BROKER_HISTORY = (
    "x-death",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-first-death-exchange",
)
"""Headers the broker writes while dead-lettering. A replay removes them: republished, RabbitMQ
3.10 would keep counting on them, and the replayed message would start out of attempts."""


@dataclass(frozen=True)
class Death:
    """One `x-death` entry: how often the message died in `queue` for `reason`."""

    queue: str
    reason: str
    count: int
    time: datetime | None
    exchange: str
    routing_keys: tuple[str, ...]


def deaths(headers: Mapping[str, Any] | None) -> list[Death]:
    """The broker's dead-letter history of a message, newest first as RabbitMQ keeps it."""
    entries = (headers or {}).get("x-death") or []
    return [
        Death(
            queue=str(entry.get("queue", "")),
            reason=str(entry.get("reason", "")),
            count=int(entry.get("count", 1)),
            time=_as_utc(entry.get("time")),
            exchange=str(entry.get("exchange", "")),
            routing_keys=tuple(str(key) for key in entry.get("routing-keys") or ()),
        )
        for entry in entries
        if isinstance(entry, Mapping)
    ]


def failed_deliveries(headers: Mapping[str, Any] | None, queues: Iterable[str]) -> int:
    """How many deliveries from `queues` failed before this one, by the broker's count."""
    return _death_count(headers, queues, COUNTED_DEATHS)


def unsettled_runs(headers: Mapping[str, Any] | None, queues: Iterable[str]) -> int:
    """How often the broker gave up on this message in `queues` after it was delivered the
    delivery limit's number of times without being acked or rejected: a consumer crashed
    or hung on it each time."""
    return _death_count(headers, queues, ("delivery_limit",))


def _death_count(
    headers: Mapping[str, Any] | None, queues: Iterable[str], reasons: Iterable[str]
) -> int:
    names, counted = set(queues), set(reasons)
    return sum(
        death.count for death in deaths(headers) if death.queue in names and death.reason in counted
    )


def first_failure_at(headers: Mapping[str, Any] | None) -> datetime | None:
    times = [death.time for death in deaths(headers) if death.time is not None]
    return min(times) if times else None


def original_route(
    headers: Mapping[str, Any] | None, exchange: str, routing_key: str
) -> tuple[str, str]:
    """Where the message was first published: retries and replays re-route it by queue name."""
    headers = headers or {}
    if ORIGINAL_ROUTING_KEY in headers:
        return str(headers.get(ORIGINAL_EXCHANGE, "")), str(headers[ORIGINAL_ROUTING_KEY])
    # Every hop after the first goes through the default exchange ("") by queue name.
    published = next((d for d in deaths(headers) if d.exchange and d.routing_keys), None)
    if published is not None:
        return published.exchange, published.routing_keys[0]
    return exchange, routing_key


def _as_utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
