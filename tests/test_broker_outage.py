"""RabbitMQ stops while customers order: the outbox keeps every order, every service reports
itself unready and then recovers on its own, and the audit finds nothing lost or doubled."""

import asyncio
import uuid

import pytest

from testkit.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

SERVICE_ENV = {"SHIPPING_DISPATCH_DELAY": "3600"}  # orders rest at confirmed


async def rabbitmq_check(system, service: str) -> tuple[int, str]:
    response = await getattr(system, service).get("/health/ready")
    return response.status_code, response.json()["checks"]["rabbitmq"]


async def test_orders_placed_while_rabbitmq_is_down_flow_once_it_is_back(
    system, infrastructure
) -> None:
    code = f"OUTAGE-{uuid.uuid4().hex[:8]}"
    await system.inventory.put(f"/stock/{code}", json={"available": 3})
    await asyncio.to_thread(infrastructure.stop_broker)
    try:

        async def every_service_reports_broker_down() -> bool:
            for service in ("orders", "email", "inventory", "shipping"):
                status, check = await rabbitmq_check(system, service)
                assert status == 503 and check != "ok", (service, check)
            return True

        await eventually(every_service_reports_broker_down, timeout=30)
        placed = [await system.place((code, 1)), await system.place((code, 1))]
        for order_id in placed:
            assert (await system.orders.get(f"/orders/{order_id}")).json()["status"] == "pending"

        async def outbox_holds_them() -> bool:
            pending = (await system.metrics("orders")).get(("outbox_pending_events", ()), 0)
            assert pending >= len(placed), pending
            return True

        await eventually(outbox_holds_them, timeout=30, interval=1)
    finally:
        await asyncio.to_thread(infrastructure.start_broker)

    await eventually(system.all_ready, timeout=60)

    async def outbox_drained() -> bool:
        assert (await system.metrics("orders"))[("outbox_pending_events", ())] == 0
        return True

    await eventually(outbox_drained, timeout=30, interval=1)
    for order_id in placed:
        outcome = await eventually(lambda: system.settled(order_id, "confirmed"), timeout=60)
        assert len(outcome["emails"]) == len(outcome["shipments"]) == len(outcome["mails"]) == 1
    assert await system.stock(code) == {"sku": code, "available": 1, "reserved": 2}
    await eventually(system.audit_is_clean, timeout=60)
