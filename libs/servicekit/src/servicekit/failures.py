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

STEERING = (*BROKER_HISTORY, ORIGINAL_EXCHANGE, ORIGINAL_ROUTING_KEY)
"""Headers that decide how a message is handled: its attempts, and the route it was published
under. Only the broker (dead-lettering) and a replay write them, so on a message straight from
a publisher they are forged."""


def steering_headers(headers: Mapping[str, Any] | None) -> list[str]:
    """The steering headers present in `headers`."""
    return [name for name in STEERING if name in (headers or {})]


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
    """The broker's dead-letter history of a message, newest first as RabbitMQ keeps it.

    Headers are whatever a publisher wrote, so anything that is not an entry as the broker
    writes it (a queue and a reason, a count from 1 to `MAX_DEATH_COUNT`) is skipped."""
    entries = (headers or {}).get("x-death")
    if not isinstance(entries, list | tuple):
        return []
    return [death for entry in entries if (death := _death(entry)) is not None]


MAX_DEATH_COUNT = 1_000_000
"""More than a retry loop waiting out an outage for years would write."""


def _death(entry: object) -> Death | None:
    if not isinstance(entry, Mapping):
        return None
    queue, reason, count = entry.get("queue"), entry.get("reason"), entry.get("count")
    if not (isinstance(queue, str) and isinstance(reason, str)):
        return None
    if type(count) is not int or not 1 <= count <= MAX_DEATH_COUNT:
        return None
    exchange, keys = entry.get("exchange"), entry.get("routing-keys")
    return Death(
        queue=queue,
        reason=reason,
        count=count,
        time=_as_utc(entry.get("time")),
        exchange=exchange if isinstance(exchange, str) else "",
        routing_keys=tuple(k for k in keys if isinstance(k, str))
        if isinstance(keys, list | tuple)
        else (),
    )


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
    replayed_exchange, replayed_key = (
        headers.get(ORIGINAL_EXCHANGE),
        headers.get(ORIGINAL_ROUTING_KEY),
    )
    if isinstance(replayed_exchange, str) and isinstance(replayed_key, str):
        return replayed_exchange, replayed_key
    # Every hop after the first goes through the service's own exchanges: the route it was
    # published under is the one its first death records.
    first_queue, first_reason = (
        headers.get("x-first-death-queue"),
        headers.get("x-first-death-reason"),
    )
    published = next(
        (
            death
            for death in deaths(headers)
            if (death.queue, death.reason) == (first_queue, first_reason) and death.routing_keys
        ),
        None,
    )
    if published is not None:
        return published.exchange, published.routing_keys[0]
    return exchange, routing_key


def _as_utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
