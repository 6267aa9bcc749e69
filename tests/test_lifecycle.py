"""Every path of an order's life, the idempotent API and request-reply, over the real stack.

Shipments wait an hour here, so each test decides when one leaves (POST .../dispatch).
"""

import asyncio
import time
import uuid

import pytest

from testkit.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SERVICE_ENV = {"SHIPPING_DISPATCH_DELAY": "3600", "ORDERS_AVAILABILITY_TIMEOUT": "1"}


async def stocked(system, available: int) -> str:
    code = f"LIFE-{uuid.uuid4().hex[:8]}"
    response = await system.inventory.put(f"/stock/{code}", json={"available": available})
    assert response.status_code == 200, response.text
    return code


async def confirmed_order(system, code: str, quantity: int = 1) -> dict:
    order_id = await system.place((code, quantity))
    return await eventually(lambda: system.settled(order_id, "confirmed"), timeout=30)


async def dispatch(system, outcome: dict):
    [shipment] = outcome["shipments"]
    return await system.shipping.post(f"/shipments/{shipment['shipment_id']}/dispatch")


def timeline(outcome: dict) -> list[tuple[str, str]]:
    return [(step["status"], step["producer"]) for step in outcome["order"]["timeline"]]


def mail_text(system, order_id: str, kind_in_subject: str) -> str:
    [mail] = [m for m in system.mails_about(order_id) if kind_in_subject in m["Subject"]]
    return mail.get_payload()


async def test_a_confirmed_order_ships_when_dispatched_and_the_customer_is_told(system) -> None:
    code = await stocked(system, 3)
    confirmed = await confirmed_order(system, code, 2)
    assert confirmed["email_kinds"] == ["order_confirmation"]
    assert confirmed["shipments"][0]["status"] == "ready"
    assert await system.stock(code) == {"sku": code, "available": 1, "reserved": 2}
    order_id = confirmed["order"]["order_id"]
    assert f"2 x Product {code} ({code})" in mail_text(system, order_id, "confirmed")

    response = await dispatch(system, confirmed)
    assert response.status_code == 200, response.text
    tracking = response.json()["tracking_number"]
    again = await dispatch(system, confirmed)
    assert (again.status_code, again.json()["tracking_number"]) == (200, tracking)

    shipped = await eventually(lambda: system.settled(order_id, "shipped"), timeout=30)
    assert timeline(shipped) == [
        ("pending", "orders"),
        ("confirmed", "inventory"),
        ("shipped", "shipping"),
    ]
    assert shipped["order"]["tracking_number"] == tracking
    assert shipped["email_kinds"] == ["order_confirmation", "shipment_dispatched"]
    assert tracking in mail_text(system, order_id, "shipped")
    assert await system.stock(code) == {"sku": code, "available": 1, "reserved": 0}


async def test_an_order_beyond_stock_is_rejected_and_the_mail_names_what_was_short(
    system,
) -> None:
    code = await stocked(system, 1)
    order_id = await system.place((code, 5))
    rejected = await eventually(lambda: system.settled(order_id, "rejected"), timeout=30)

    assert timeline(rejected) == [("pending", "orders"), ("rejected", "inventory")]
    assert rejected["email_kinds"] == ["order_rejection"]
    assert rejected["shipments"][0]["status"] == "cancelled"
    text = mail_text(system, order_id, "cannot fulfil")
    assert f"Product {code} ({code}): you asked for 5, we have 1" in text
    assert await system.stock(code) == {"sku": code, "available": 1, "reserved": 0}


async def test_cancelling_before_dispatch_releases_stock_cancels_shipment_and_tells_customer(
    system,
) -> None:
    code = await stocked(system, 2)
    confirmed = await confirmed_order(system, code, 2)
    order_id = confirmed["order"]["order_id"]

    response = await system.orders.post(
        f"/orders/{order_id}/cancel", json={"reason": "changed mind"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"order_id": order_id, "status": "cancelled"}

    cancelled = await eventually(lambda: system.settled(order_id, "cancelled"), timeout=30)
    assert timeline(cancelled) == [
        ("pending", "orders"),
        ("confirmed", "inventory"),
        ("cancelled", "orders"),
    ]
    assert cancelled["reservation"] == "released"
    assert cancelled["shipments"][0]["status"] == "cancelled"
    assert cancelled["email_kinds"] == ["order_cancellation", "order_confirmation"]
    assert "changed mind" in mail_text(system, order_id, "cancelled")
    assert await system.stock(code) == {"sku": code, "available": 2, "reserved": 0}
    refused = await dispatch(system, cancelled)
    assert refused.status_code == 409 and "cancelled" in refused.json()["detail"]
    again = await system.orders.post(f"/orders/{order_id}/cancel")
    assert again.status_code == 200
    await system.audit_is_clean()


async def test_cancelling_after_dispatch_is_refused_with_the_reason(system) -> None:
    code = await stocked(system, 1)
    confirmed = await confirmed_order(system, code)
    order_id = confirmed["order"]["order_id"]
    assert (await dispatch(system, confirmed)).status_code == 200
    await eventually(lambda: system.settled(order_id, "shipped"), timeout=30)

    response = await system.orders.post(f"/orders/{order_id}/cancel")
    assert response.status_code == 409
    assert "already been dispatched" in response.json()["detail"]
    assert (await system.order(order_id))["status"] == "shipped"
    unknown = await system.orders.post(f"/orders/{uuid.uuid4()}/cancel")
    assert unknown.status_code == 404


async def test_an_idempotency_key_places_one_order_however_often_it_is_sent(system) -> None:
    code = await stocked(system, 10)
    key = f"checkout-{uuid.uuid4()}"
    first, *retries = await asyncio.gather(
        *(system.order_request((code, 1), idempotency_key=key) for _ in range(4))
    )
    assert first.status_code == 202, first.text
    order_id = first.json()["order_id"]
    for retry in retries:
        assert (retry.status_code, retry.json()) == (202, first.json())
    replayed = [r for r in (first, *retries) if r.headers.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == 3

    other_body = await system.order_request((code, 2), idempotency_key=key)
    assert other_body.status_code == 422
    assert other_body.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]

    await eventually(lambda: system.settled(order_id, "confirmed"), timeout=30)
    assert await system.stock(code) == {"sku": code, "available": 9, "reserved": 1}
    report = await system.audit_is_clean()
    assert report.orders_checked >= 1


async def test_availability_is_asked_of_inventory_and_times_out_with_504_when_it_is_away(
    system,
) -> None:
    code = await stocked(system, 7)
    answer = await system.orders.get("/availability", params={"sku": code})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"sku": code, "stocked": True, "available": 7, "reserved": 0}
    unknown = await system.orders.get("/availability", params={"sku": "NEVER-STOCKED"})
    assert unknown.json()["stocked"] is False
    invalid = await system.orders.get("/availability", params={"sku": "no spaces"})
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["query", "sku"]

    assert system.stack.stop_service("inventory") == 0
    try:
        started = time.monotonic()
        away = await system.orders.get("/availability", params={"sku": code})
        waited = time.monotonic() - started
        assert away.status_code == 504, away.text
        assert "did not answer within 1s" in away.json()["detail"]
        assert waited < 5, f"answered 504 after {waited:.1f}s, timeout is 1s"
    finally:
        system.stack.start_service("inventory")
        await asyncio.to_thread(system.stack.wait_ready, 60, ("inventory",))

    back = await system.orders.get("/availability", params={"sku": code})
    assert (back.status_code, back.json()["available"]) == (200, 7)
