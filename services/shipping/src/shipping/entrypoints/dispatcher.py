"""The dispatcher: a timer, the shipping service's third entrypoint beside HTTP and AMQP.

It only decides when to run the `dispatch_due` use case; what is due is the use case's rule.
"""

import asyncio
import logging

import asyncpg

from ..handlers import DISPATCH_BATCH, dispatch_due

log = logging.getLogger(__name__)


async def run_dispatcher(pool: asyncpg.Pool, *, interval: float) -> None:
    """Dispatch due shipments for the life of the process, looking every `interval` seconds;
    survives database outages. A failing batch rolls back whole and is tried again, so
    nothing is dispatched twice."""
    while True:
        try:
            if await dispatch_due(pool) == DISPATCH_BATCH:
                continue  # more may be due
        except Exception as exc:  # noqa: BLE001 - an outage or a bad row: never stop dispatching
            log.warning("dispatcher: %s: %s; retrying in %gs", type(exc).__name__, exc, interval)
        await asyncio.sleep(interval)
