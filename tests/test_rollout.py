"""order.created v2 rolls out without lockstep deploys: a mixed fleet, then a rollback.

1. email still runs a deploy that reads only v1; the producer publishes v1 and v2 (same event
   id): email gets v1, the upgraded consumers get both and apply the event once.
2. email is upgraded; the producer publishes v2 only.
3. the producer rolls back to v1; every consumer upcasts it.
"""

import asyncio
import uuid
from pathlib import Path

import pytest

from testkit.broker import peek_queue
from testkit.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SERVICE_ENV = {"SHIPPING_DISPATCH_DELAY": "3600"}
LEGACY_LAUNCHER = str(Path(__file__).with_name("legacy_service.py"))


async def restart(system, service: str, launcher: str | None = None, env=None) -> None:
    assert system.stack.stop_service(service) == 0
    system.stack.start_service(service, launcher, env)
    await asyncio.to_thread(system.stack.wait_ready, 60, (service,))


async def publish_versions(system, versions: str) -> None:
    await restart(system, "orders", env={"ORDERS_ORDER_CREATED_VERSIONS": versions})


async def confirmed_once_everywhere(system, code: str) -> str:
    """Place an order; once every service reacted once, the text of its confirmation mail."""
    order_id = await system.place((code, 1))
    outcome = await eventually(lambda: system.settled(order_id, "confirmed"), timeout=45)
    assert outcome["email_kinds"] == ["order_confirmation"]
    assert len(outcome["shipments"]) == 1
    [mail] = system.mails_about(order_id)
    return mail.get_payload()


async def duplicates(system, service: str) -> int:
    return (await system.readiness(service))["messages"]["duplicates"]


async def duplicates_grew(system, service: str, before: int) -> bool:
    return await duplicates(system, service) > before


async def test_a_mixed_fleet_rolls_v2_out_and_the_producer_back_without_losing_an_order(
    system,
) -> None:
    code = f"ROLL-{uuid.uuid4().hex[:8]}"
    await system.inventory.put(f"/stock/{code}", json={"available": 10})

    await restart(system, "email", LEGACY_LAUNCHER)
    await publish_versions(system, "[1, 2]")
    before = {s: await duplicates(system, s) for s in ("inventory", "shipping")}
    text = await confirmed_once_everywhere(system, code)
    assert f"1 x {code} ({code})" in text, "the v1-only email deploy saw only v1"
    for service in ("inventory", "shipping"):  # each read v1 and v2, and applied one
        await eventually(lambda: duplicates_grew(system, service, before[service]), timeout=15)

    await restart(system, "email")
    await publish_versions(system, "[2]")
    text = await confirmed_once_everywhere(system, code)
    assert f"1 x Product {code} ({code})" in text, "v2 carries the product name"

    await publish_versions(system, "[1]")
    text = await confirmed_once_everywhere(system, code)
    assert f"1 x {code} ({code})" in text, "v1 upcast: the SKU stands in for the name"

    assert await peek_queue(system.rabbitmq.url, "email.dlq") == []
    report = await system.audit_is_clean()
    assert report.orders_checked == 3
