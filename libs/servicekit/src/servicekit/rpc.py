"""Request-reply over RabbitMQ: a query answered at once, never an event.

The asker publishes to the responder's queue with RabbitMQ's direct reply-to and a
correlation id (FastStream's `broker.request`), and gives up after a timeout. The request
expires with the asker's patience, so a responder that was down never answers stale queries.

The reply is not mandatory: RabbitMQ 3.10 returns every mandatory publish to a direct reply-to
address as unroutable (NO_ROUTE), delivered or not, so a return would say nothing. A reply
whose asker has gone is dropped by the broker, as the asker no longer waits for it.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue, RabbitResponse
from pydantic import BaseModel

log = logging.getLogger(__name__)

RESPONDER_PREFETCH = 4
"""Queries a responder takes at a time unless told otherwise. Each answer runs on a pooled
connection, beside the event handlers, like an HTTP request: keep it small next to the pool."""

Reply = TypeVar("Reply", bound=BaseModel)


class NoReply(Exception):
    """The responder did not answer in time, or could not be reached."""


@dataclass(frozen=True)
class Responder:
    """Answers `request` messages on `queue` with what `answer` returns."""

    queue: str
    request: type[BaseModel]
    answer: Callable[[asyncpg.Pool, Any], Awaitable[BaseModel]]
    prefetch: int = RESPONDER_PREFETCH
    """Unacknowledged queries at a time, on the responder's own channel: without one, every
    query waiting in the queue would start an answer at once."""

    def declaration(self) -> RabbitQueue:
        """Not durable: a query is worth nothing after a restart, and each one expires."""
        return RabbitQueue(self.queue, durable=False)


def subscribe_responder(
    broker: RabbitBroker, responder: Responder, pool: Callable[[], asyncpg.Pool]
) -> Any:
    """Register the responder on `broker`; FastStream sends the return value to `reply_to`."""
    request_model = responder.request

    async def respond(body: dict[str, Any]) -> RabbitResponse:
        reply = await responder.answer(pool(), request_model.model_validate(body))
        log.debug("%s answered", responder.queue)
        return RabbitResponse(reply.model_dump(mode="json"), mandatory=False)

    respond.__doc__ = f"Answers {request_model.__name__} with the current state."
    return broker.subscriber(
        responder.declaration(),
        channel=Channel(prefetch_count=responder.prefetch),
        title=f"{responder.queue}:request",
    )(respond)


async def ask(
    broker: RabbitBroker, queue: str, request: BaseModel, reply: type[Reply], timeout: float
) -> Reply:
    """Send `request` to `queue` and wait at most `timeout` seconds in all for the reply.

    FastStream serialises requests on one reply consumer per connection, so the wait for
    that turn counts against the timeout too.
    """
    try:
        async with asyncio.timeout(timeout):
            answer = await broker.request(
                request.model_dump(mode="json"),
                queue,
                expiration=timeout,
                timeout=timeout,
            )
    except TimeoutError as exc:
        raise NoReply(f"{queue} did not answer within {timeout:g}s") from exc
    except Exception as exc:  # noqa: BLE001 - unroutable, disconnected: no answer either way
        raise NoReply(f"{queue} unreachable: {type(exc).__name__}: {exc}") from exc
    return reply.model_validate_json(answer.body)
