"""RabbitMQ access for the operator: one connection, queue depths by passive declares."""

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity, InvalidFrameError

from servicekit.topology import dead_letter_queue_name, work_queue_name
from servicekit.wire import tolerate_undecodable_text

from .errors import CommandError
from .management import ManagementApi
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


def republished(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """`message` to publish again, persistent, with its body and properties and these headers.
    Not `user_id`: the broker refuses one that is not the publishing user's."""
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        expiration=message.expiration,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )


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
    """Every queue of one service as the broker has it: work, each wait and retry queue it
    holds (an earlier layout's too), and the dead-letter queue."""

    service: str
    work: QueueState | None
    retrying: list[QueueState]
    """Wait and retry queues, by tier."""
    dead_letters: QueueState

    @property
    def all(self) -> list[QueueState]:
        return [queue for queue in (self.work, *self.retrying, self.dead_letters) if queue]

    @property
    def retry_tiers(self) -> int:
        return sum(1 for queue in self.retrying if ".retry." in queue.name)


async def service_queues(
    probe: QueueProbe, api: ManagementApi, service: str
) -> ServiceQueues | None:
    """The service's queues; None when the broker has no dead-letter queue for it.

    Their names come from the management API (AMQP cannot list queues), so every wait queue
    the broker holds is shown, whatever delays the service runs with; their depths from
    passive declares, which do not lag as the management statistics do."""
    dead_letters = await probe.state(dead_letter_queue_name(service))
    if dead_letters is None:
        return None
    retrying = []
    for name in sorted(
        filter(_retrying(service).match, await api.queue_names(service)), key=_by_tier
    ):
        if (state := await probe.state(name)) is not None:
            retrying.append(state)
    work = await probe.state(work_queue_name(service))
    return ServiceQueues(service, work, retrying, dead_letters)


def _retrying(service: str) -> re.Pattern[str]:
    """`<service>.wait.<tier>.<delay>` and `<service>.retry.<tier>`."""
    return re.compile(rf"^{re.escape(service)}\.(wait\.\d+\.[^.]+|retry\.\d+)$")


def _by_tier(name: str) -> tuple[int, bool]:
    """The wait of a tier before its retry queue."""
    kind, tier = name.split(".")[1:3]
    return int(tier), kind == "retry"


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


async def service_depths(
    probe: QueueProbe, api: ManagementApi, service: str
) -> ServiceDepths | None:
    """The service's queue depths; None when the broker has no dead-letter queue for it."""
    queues = await service_queues(probe, api, service)
    if queues is None:
        return None
    work = queues.work.messages if queues.work else 0
    return ServiceDepths(
        service,
        queues.dead_letters.messages,
        work,
        queues.retry_tiers,
        {queue.name: queue.messages for queue in queues.retrying},
    )


def unknown_service(service: str) -> CommandError:
    return CommandError(
        f"unknown service {service!r}: no queue {dead_letter_queue_name(service)} on this broker"
    )
