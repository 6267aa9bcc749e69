"""Run a service with a fault injected into its event handlers; fault tests only.

    python tests/faulty_service.py <module> serve

`FAULT_BUGGY_ORDER_ID`: every handler raises for that order, as a bad deploy would.
`FAULT_HANDLER_DELAY`: every handler first sleeps that many seconds inside its transaction,
so a test can catch messages in flight.
"""

import asyncio
import os
import runpy
import sys

from servicekit import consumer


def with_faults(handler: consumer.Handler) -> consumer.Handler:
    buggy_order = os.environ.get("FAULT_BUGGY_ORDER_ID")
    delay = float(os.environ.get("FAULT_HANDLER_DELAY", "0"))

    async def faulty(conn, event) -> None:
        if buggy_order and str(getattr(event, "order_id", "")) == buggy_order:
            raise KeyError(f"injected bug for order {buggy_order}")
        await asyncio.sleep(delay)
        await handler(conn, event)

    return faulty


class FaultyConsumer(consumer.EventConsumer):
    def __init__(self, topology, pool_provider, broker, handlers, **options) -> None:
        faulty = {event: with_faults(handler) for event, handler in handlers.items()}
        super().__init__(topology, pool_provider, broker, faulty, **options)


if __name__ == "__main__":
    import servicekit.service

    servicekit.service.EventConsumer = FaultyConsumer
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
