"""The RabbitMQ topology, declared identically by services, tests and the operator CLI.

One durable topic exchange `events` carries every event under `<aggregate>.<event>.v<N>`.
Each consuming service owns a chain of quorum queues; the broker moves a failing message
along it by dead-lettering, so retry state lives in the broker, not in a consumer:

    events ──▶ <svc>.work ──reject──▶ <svc>.wait.1 ──TTL 1s──▶ <svc>.retry.1
               <svc>.retry.1 ──reject──▶ <svc>.wait.2 ──TTL 10s──▶ <svc>.retry.2
               ...                      (the last retry queue loops on the last wait)

- `<svc>.work` and every `<svc>.retry.<n>` are consumed by the same handlers. Rejecting a
  message there dead-letters it into the next wait queue, and the broker records that in the
  message's `x-death` header: the attempt count survives restarts and is shared by replicas.
- `<svc>.wait.<n>` has no consumer; its queue-level TTL is the n-th backoff delay (per-message
  TTL would block behind the message at the head on RabbitMQ 3.10).
- `<svc>.dlx` is a fanout exchange into `<svc>.dlq`, where the consumer puts what can never be
  processed, or is out of attempts, with the reason in the headers. Operators replay from there
  to `<svc>.work` alone, so other services see nothing twice.

RabbitMQ refuses to redeclare a queue with different arguments, so these definitions live here
only. Changing a service's retry delays changes its wait queues: drain and delete them first.

What each service may do on the broker, and nothing more, is `broker_permissions`: provisioning
grants exactly that, and declares `events`, which no service may configure.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.exceptions import ChannelAccessRefused, ChannelNotFoundEntity
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
      its own queues and dead-letter exchange, `events`, and the default exchange. The
      default exchange is needed three times over: every queue of the retry chain
      dead-letters through it, and RabbitMQ checks write on a queue's
      `x-dead-letter-exchange` when it is declared; an asker publishes its query through
      it to the responder's queue; a responder publishes the answer through it to the
      asker's direct reply-to;
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


def wait_queue_name(service: str, tier: int) -> str:
    return f"{service}.wait.{tier}"


def dead_letter_queue_name(service: str) -> str:
    return f"{service}.dlq"


def dead_letter_exchange_name(service: str) -> str:
    return f"{service}.dlx"


def _dead_letter_to(queue: str) -> dict[str, str]:
    """Arguments that dead-letter, at least once, straight into `queue` (default exchange)."""
    return {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",  # at-least-once needs it, or stays at-most-once silently
    }


@dataclass(frozen=True)
class ServiceTopology:
    service: str
    routing_keys: tuple[str, ...]
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS

    def __post_init__(self) -> None:
        if not self.retry_delays or min(self.retry_delays) <= 0:
            raise ValueError("retry_delays needs at least one positive delay")

    @property
    def work_queue(self) -> RabbitQueue:
        return self._consuming_queue(work_queue_name(self.service), next_tier=1)

    @property
    def retry_queues(self) -> list[RabbitQueue]:
        last = len(self.retry_delays)
        return [
            self._consuming_queue(retry_queue_name(self.service, tier), min(tier + 1, last))
            for tier in range(1, last + 1)
        ]

    @property
    def consuming_queues(self) -> list[RabbitQueue]:
        return [self.work_queue, *self.retry_queues]

    @property
    def wait_queues(self) -> list[RabbitQueue]:
        return [
            RabbitQueue(
                wait_queue_name(self.service, tier),
                queue_type=QueueType.QUORUM,
                arguments={
                    "x-message-ttl": round(delay * 1000),
                    **_dead_letter_to(retry_queue_name(self.service, tier)),
                },
            )
            for tier, delay in enumerate(self.retry_delays, start=1)
        ]

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

    def _consuming_queue(self, name: str, next_tier: int) -> RabbitQueue:
        return RabbitQueue(
            name,
            queue_type=QueueType.QUORUM,
            arguments={
                "x-delivery-limit": DELIVERY_LIMIT,
                **_dead_letter_to(wait_queue_name(self.service, next_tier)),
            },
        )

    async def declare(self, channel: AbstractChannel) -> None:
        """Declare exchanges, queues and bindings on `channel`; safe to repeat.

        `events` is declared on a channel of its own (`declare_events_exchange`), so a user
        that may not configure it (production) still declares the rest here.

        Bindings converge on what this deploy reads: an event version it no longer accepts
        (after a rollback, say) is unbound, so it never reaches a consumer that would only
        dead-letter it.

        Use a channel nobody consumes on, never `RabbitBroker.declare_queue`: FastStream
        caches each queue it declares by its definition alone, whatever the channel, and a
        subscriber finding its queue in that cache consumes on the channel it was declared
        on instead of opening its own `Channel(prefetch_count=N)`. Each subscriber declares
        its queue again, identically, on its own channel as it starts.
        """
        await declare_events_exchange(channel)
        events = EVENTS_EXCHANGE.name
        dlx = await _declare_exchange(channel, self.dead_letter_exchange)
        dlq = await _declare_queue(channel, self.dead_letter_queue)
        await dlq.bind(dlx, routing_key="")
        for queue in [*self.wait_queues, *self.retry_queues]:
            await _declare_queue(channel, queue)
        work = await _declare_queue(channel, self.work_queue)
        for key in self.routing_keys:
            await work.bind(events, routing_key=key)
        for key in EVENTS_BY_ROUTING_KEY.keys() - set(self.routing_keys):
            await work.unbind(events, routing_key=key)


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
