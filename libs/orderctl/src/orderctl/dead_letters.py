"""Reading, replaying and purging a service's dead-letter queue without losing a message.

A session reads the queue with `basic.get` and keeps every message unacknowledged on its
channel. Only a message replayed (publish confirmed) or purged is acknowledged; closing the
channel at the end hands every other message back to the queue.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import ChannelNotFoundEntity

from servicekit import failures
from servicekit.topology import (
    dead_letter_queue_name,
    redeliver_exchange_name,
    work_queue_name,
)

from .broker import republished, unknown_service

DEFAULT_LIMIT = 10_000
PUBLISH_TIMEOUT = 10.0
REPLAY_BATCH = 100
"""Replays published concurrently before awaiting their confirms: one confirm round trip per
message would cap a replay at a few hundred messages a second."""

DELIVERY_COUNT = "x-delivery-count"
"""Written by a quorum queue at each delivery: it counts deliveries from the DLQ, not failures."""

_NOT_REPLAYED = frozenset(
    {*failures.BROKER_HISTORY, failures.FIRST_FAILURE_AT, failures.LAST_FAILURE_AT, DELIVERY_COUNT}
)
_FAILURE_PREFIX = "x-failure-"


@dataclass(frozen=True)
class DeadLetter:
    """A message read from a dead-letter queue, and what its headers say about the failure."""

    message: AbstractIncomingMessage

    @property
    def message_id(self) -> str:
        return self.message.message_id or ""

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.message.headers or {})

    @property
    def body(self) -> bytes:
        return self.message.body

    @property
    def reason(self) -> str:
        return str(self.headers.get(failures.FAILURE_REASON) or "(no reason recorded)")

    @property
    def exception(self) -> str:
        return str(self.headers.get(failures.FAILURE_EXCEPTION) or "")

    @property
    def attempts(self) -> int | None:
        value = self.headers.get(failures.FAILURE_ATTEMPTS)
        return value if isinstance(value, int) else None

    @property
    def replay_count(self) -> int:
        """How often it was replayed before: one that is back has failed again."""
        return _replay_count(self.headers)

    @property
    def original_route(self) -> tuple[str, str]:
        """(exchange, routing key) the event was first published with."""
        return failures.original_route(
            self.headers, self.message.exchange or "", self.message.routing_key or ""
        )

    @property
    def routing_key(self) -> str:
        return self.original_route[1]

    @property
    def deaths(self) -> list[failures.Death]:
        return failures.deaths(self.headers)

    @property
    def first_failure_at(self) -> datetime | None:
        recorded = _timestamp(self.headers.get(failures.FIRST_FAILURE_AT))
        return recorded or failures.first_failure_at(self.headers)

    @property
    def last_failure_at(self) -> datetime | None:
        recorded = _timestamp(self.headers.get(failures.LAST_FAILURE_AT))
        return recorded or max((d.time for d in self.deaths if d.time), default=None)

    @property
    def event(self) -> Any:
        """The body as JSON, or None when it is not JSON (a malformed event is a DLQ classic)."""
        try:
            return json.loads(self.body)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
            return None


def _timestamp(value: Any) -> datetime | None:
    """A header's time, timezone-aware, whether written as an ISO string or an AMQP timestamp."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on; an empty selection means all of them."""

    message_ids: tuple[str, ...] = ()
    reason: str | None = None
    """Matches a failure reason containing this text, ignoring case."""
    routing_key: str | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (not self.message_ids or letter.message_id in self.message_ids)
            and (self.reason is None or self.reason.casefold() in letter.reason.casefold())
            and (self.routing_key is None or letter.routing_key == self.routing_key)
        )

    def missing_ids(self, letters: Iterable[DeadLetter]) -> list[str]:
        """Requested message ids that are not among `letters`."""
        present = {letter.message_id for letter in letters}
        return [message_id for message_id in self.message_ids if message_id not in present]


@dataclass(frozen=True)
class ReasonGroup:
    """The dead letters that failed for one reason."""

    reason: str
    letters: list[DeadLetter]

    @property
    def routing_keys(self) -> list[str]:
        return sorted({letter.routing_key for letter in self.letters})

    @property
    def exceptions(self) -> list[str]:
        return sorted({letter.exception for letter in self.letters if letter.exception})

    @property
    def replayed(self) -> int:
        """How many of them failed again after a replay."""
        return sum(1 for letter in self.letters if letter.replay_count)

    @property
    def first_failure_at(self) -> datetime | None:
        return min((t for t in (ltr.first_failure_at for ltr in self.letters) if t), default=None)

    @property
    def last_failure_at(self) -> datetime | None:
        return max((t for t in (ltr.last_failure_at for ltr in self.letters) if t), default=None)


def by_reason(letters: Iterable[DeadLetter]) -> list[ReasonGroup]:
    """Dead letters grouped by failure reason, most frequent first."""
    groups: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        groups.setdefault(letter.reason, []).append(letter)
    return sorted(
        (ReasonGroup(reason, group) for reason, group in groups.items()),
        key=lambda group: -len(group.letters),
    )


@dataclass
class ReplayResult:
    replayed: list[DeadLetter] = field(default_factory=list)
    failed: list[tuple[DeadLetter, str]] = field(default_factory=list)


def replay_message(letter: DeadLetter, now: datetime) -> aio_pika.Message:
    """The message to put back on the work queue: same id, body and properties; the failure
    and broker history removed so the consumer gives it a full set of attempts again."""
    headers = {
        name: value
        for name, value in letter.headers.items()
        if name not in _NOT_REPLAYED and not name.startswith(_FAILURE_PREFIX)
    }
    headers[failures.ORIGINAL_EXCHANGE], headers[failures.ORIGINAL_ROUTING_KEY] = (
        letter.original_route
    )
    headers[failures.REPLAY_COUNT] = letter.replay_count + 1
    headers[failures.REPLAYED_AT] = now.isoformat()
    return republished(letter.message, headers)


def _replay_count(headers: Mapping[str, Any]) -> int:
    try:
        return int(headers.get(failures.REPLAY_COUNT) or 0)
    except (TypeError, ValueError):
        return 0


class DeadLetterSession:
    """Up to `limit` messages of one service's DLQ, held unacknowledged while the session lasts."""

    def __init__(
        self, connection: AbstractConnection, channel: AbstractChannel, service: str
    ) -> None:
        self.service = service
        self.queue_name = dead_letter_queue_name(service)
        self.work_queue_name = work_queue_name(service)
        self.letters: list[DeadLetter] = []
        self.left_unread = 0
        """Messages still in the queue beyond `limit`."""
        self._connection = connection
        self._channel = channel

    async def _read(self, limit: int) -> None:
        try:
            queue = await self._channel.declare_queue(self.queue_name, passive=True)
        except ChannelNotFoundEntity as exc:
            raise unknown_service(self.service) from exc
        while len(self.letters) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                return
            self.letters.append(DeadLetter(message))
        self.left_unread = (await queue.declare()).message_count

    async def replay(self, letters: list[DeadLetter]) -> ReplayResult:
        """Publish each letter to the service's own work queue, then acknowledge it in the
        DLQ once the broker has confirmed the publish; a failed one stays in the DLQ."""
        result = ReplayResult()
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        async with channel:
            for start in range(0, len(letters), REPLAY_BATCH):
                batch = letters[start : start + REPLAY_BATCH]
                outcomes = await asyncio.gather(
                    *(self._publish(channel, letter) for letter in batch), return_exceptions=True
                )
                for letter, outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        result.failed.append((letter, str(outcome) or type(outcome).__name__))
                    else:
                        await letter.message.ack()
                        result.replayed.append(letter)
        return result

    async def _publish(self, channel: AbstractChannel, letter: DeadLetter) -> None:
        """Through `<svc>.redeliver`, where the work queue is bound under its name, as the
        consumer resubmits: every queue is fed through a binding."""
        redeliver = await channel.get_exchange(redeliver_exchange_name(self.service), ensure=False)
        await redeliver.publish(
            replay_message(letter, datetime.now(UTC)),
            routing_key=self.work_queue_name,
            mandatory=True,
            timeout=PUBLISH_TIMEOUT,
        )

    async def purge(self, letters: list[DeadLetter]) -> int:
        for letter in letters:
            await letter.message.ack()
        return len(letters)


@asynccontextmanager
async def dead_letter_session(
    connection: AbstractConnection, service: str, limit: int = DEFAULT_LIMIT
) -> AsyncIterator[DeadLetterSession]:
    """Read the service's DLQ; on exit every message neither replayed nor purged goes back."""
    channel = await connection.channel(publisher_confirms=False)
    async with channel:  # closing it returns the unacknowledged messages to the queue
        session = DeadLetterSession(connection, channel, service)
        await session._read(limit)
        yield session
