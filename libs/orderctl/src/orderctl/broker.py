"""RabbitMQ access for the operator: one connection, queue depths by passive declares."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity, InvalidFrameError

from servicekit.topology import (
    dead_letter_queue_name,
    retry_queue_name,
    wait_queue_name,
    work_queue_name,
)
from servicekit.wire import tolerate_undecodable_text

from .errors import CommandError
from .text import redact

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
CONNECT_TIMEOUT = 10.0


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[AbstractConnection]:
    """A plain (not robust) connection: an operator wants an error now, not reconnects.
    A dead letter that is not UTF-8 where AMQP requires it is read, not a dropped connection."""
    tolerate_undecodable_text()
    try:
        connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT)
    except InvalidFrameError as exc:  # the broker answered Connection.Open with a close
        path = urlsplit(url).path
        vhost = unquote(path[1:]) if len(path) > 1 else "/"
        reason = f"virtual host {vhost!r} does not exist, or this user may not use it"
        raise CommandError(_cannot_connect(url, reason)) from exc
    except (AMQPError, OSError, ValueError) as exc:  # OSError includes TimeoutError
        raise CommandError(_cannot_connect(url, str(exc) or type(exc).__name__)) from exc
    async with connection:
        yield connection


def _cannot_connect(url: str, reason: str) -> str:
    return f"cannot connect to RabbitMQ at {redact(url)}: {reason}"


class QueueProbe:
    """Reads queue depths with passive declares on one channel, reopened after a miss:
    RabbitMQ closes the channel when a passively declared queue does not exist."""

    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        self._channel: AbstractChannel | None = None

    async def state(self, queue: str) -> "QueueState | None":
        """The queue's ready messages (unacknowledged ones are not counted) and consumers;
        None if missing."""
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=False)
        try:
            declared = await self._channel.declare_queue(queue, passive=True)
        except ChannelNotFoundEntity:
            self._channel = None
            return None
        result = declared.declaration_result
        return QueueState(queue, result.message_count, result.consumer_count)

    async def depth(self, queue: str) -> int | None:
        """Ready messages in `queue`; None if missing."""
        state = await self.state(queue)
        return None if state is None else state.messages


@dataclass(frozen=True)
class QueueState:
    name: str
    messages: int
    consumers: int


@dataclass(frozen=True)
class ServiceQueues:
    """Every queue of one service as the broker has it: work, the wait and retry queue of
    each retry tier, and the dead-letter queue."""

    service: str
    work: QueueState | None
    retry_tiers: list[tuple[QueueState, QueueState | None]]
    """(wait, retry) queue of each tier, in order."""
    dead_letters: QueueState

    @property
    def all(self) -> list[QueueState]:
        retrying = [queue for tier in self.retry_tiers for queue in tier if queue is not None]
        return [queue for queue in (self.work, *retrying, self.dead_letters) if queue]


async def service_queues(probe: QueueProbe, service: str) -> ServiceQueues | None:
    """The service's queues; None when the broker has no dead-letter queue for it.

    Retry tiers are found by probing `<service>.wait.1`, `.2`, ... until one is missing, so
    the CLI needs no knowledge of each service's configured delays.
    """
    dead_letters = await probe.state(dead_letter_queue_name(service))
    if dead_letters is None:
        return None
    tiers = []
    while (waiting := await probe.state(wait_queue_name(service, len(tiers) + 1))) is not None:
        tiers.append((waiting, await probe.state(retry_queue_name(service, len(tiers) + 1))))
    work = await probe.state(work_queue_name(service))
    return ServiceQueues(service, work, tiers, dead_letters)


@dataclass(frozen=True)
class ServiceDepths:
    service: str
    dead_letters: int
    work: int
    retry_tiers: int
    retrying: dict[str, int]
    """Depth of every wait and retry queue, by name."""

    @property
    def in_retry(self) -> int:
        return sum(self.retrying.values())


async def service_depths(probe: QueueProbe, service: str) -> ServiceDepths | None:
    """The service's queue depths; None when the broker has no dead-letter queue for it."""
    queues = await service_queues(probe, service)
    if queues is None:
        return None
    retrying: dict[str, int] = {}
    for tier, (waiting, retry) in enumerate(queues.retry_tiers, start=1):
        retrying[waiting.name] = waiting.messages
        retrying[retry_queue_name(service, tier)] = retry.messages if retry else 0
    work = queues.work.messages if queues.work else 0
    return ServiceDepths(
        service, queues.dead_letters.messages, work, len(queues.retry_tiers), retrying
    )


def unknown_service(service: str) -> CommandError:
    return CommandError(
        f"unknown service {service!r}: no queue {dead_letter_queue_name(service)} on this broker"
    )
