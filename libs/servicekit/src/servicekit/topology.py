"""The RabbitMQ topology, declared identically by services and tests.

One durable topic exchange `events` carries every event under `<aggregate>.<event>.v<N>`.
Each consuming service owns:

- `<service>.work`: a durable quorum queue bound to the routing keys it handles, with a
  delivery limit and at-least-once dead-lettering to `<service>.dlx`;
- `<service>.dlx`: a fanout exchange feeding `<service>.dlq`, where messages that can never
  be processed wait for an operator, keeping their original routing key.

RabbitMQ refuses to redeclare a queue with different arguments, so these definitions live
here only.
"""

from dataclasses import dataclass

from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue

EVENTS_EXCHANGE = RabbitExchange("events", type=ExchangeType.TOPIC, durable=True)

DELIVERY_LIMIT = 5
"""Redeliveries of a failing message before the broker dead-letters it."""


@dataclass(frozen=True)
class ServiceTopology:
    service: str
    routing_keys: tuple[str, ...]

    @property
    def work_queue(self) -> RabbitQueue:
        return RabbitQueue(
            f"{self.service}.work",
            queue_type=QueueType.QUORUM,
            arguments={
                "x-delivery-limit": DELIVERY_LIMIT,
                "x-dead-letter-exchange": self.dead_letter_exchange.name,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )

    @property
    def dead_letter_exchange(self) -> RabbitExchange:
        return RabbitExchange(f"{self.service}.dlx", type=ExchangeType.FANOUT, durable=True)

    @property
    def dead_letter_queue(self) -> RabbitQueue:
        return RabbitQueue(f"{self.service}.dlq", queue_type=QueueType.QUORUM)

    async def declare(self, broker: RabbitBroker) -> None:
        """Declare exchanges, queues and bindings; safe to repeat."""
        events = await broker.declare_exchange(EVENTS_EXCHANGE)
        dlx = await broker.declare_exchange(self.dead_letter_exchange)
        dlq = await broker.declare_queue(self.dead_letter_queue)
        await dlq.bind(dlx, routing_key="")
        work = await broker.declare_queue(self.work_queue)
        for key in self.routing_keys:
            await work.bind(events, routing_key=key)
