"""Run a service with a fault injected into its event handlers; fault tests only.

    python tests/faulty_service.py <module> serve

`FAULT_BUGGY_ORDER_ID`: every handler raises for that order, as a bad deploy would.
`FAULT_HANDLER_DELAY`: every handler first sleeps that many seconds inside its transaction,
so a test can catch messages in flight.

The faults go in through the service's composition root, `create_app(consumer_factory=...)`.
"""

import asyncio
import os
import sys

from servicekit.consumer import EventConsumer, Handler
from testkit.services import run_command_line


def with_faults(handler: Handler) -> Handler:
    buggy_order = os.environ.get("FAULT_BUGGY_ORDER_ID")
    delay = float(os.environ.get("FAULT_HANDLER_DELAY", "0"))

    async def faulty(conn, event) -> None:
        if buggy_order and str(getattr(event, "order_id", "")) == buggy_order:
            raise KeyError(f"injected bug for order {buggy_order}")
        await asyncio.sleep(delay)
        await handler(conn, event)

    return faulty


def faulty_consumer(service, pool_provider, broker, handlers, **options) -> EventConsumer:
    """The service's own consumer, with every handler behind `with_faults`."""
    faulty = {event: with_faults(handler) for event, handler in handlers.items()}
    return EventConsumer(service, pool_provider, broker, faulty, **options)


if __name__ == "__main__":
    package, *command = sys.argv[1:]
    run_command_line(package, command, consumer_factory=faulty_consumer)
