"""One trace per order, on real processes, the real broker and an in-test OTLP receiver:
from the HTTP request that placed it, through each outbox, into every service; and a
retried message stays in its trace; JSON log lines carry it too."""

import json
import secrets
import uuid

import pytest

from contracts import OrderConfirmedV1
from testkit.broker import peek_queue, publish_raw
from testkit.events import order_created
from testkit.otlp import otlp_receiver
from testkit.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SERVICES = {"orders", "email", "inventory", "shipping"}


@pytest.fixture(scope="module")
def receiver():
    with otlp_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def service_env(receiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export spans at once, not every 5 s
        "SHIPPING_DISPATCH_DELAY": "1",
        "SHIPPING_DISPATCH_POLL_INTERVAL": "0.2",
        "EMAIL_RETRY_DELAYS": "[0.3]",
        "EMAIL_SMTP_CIRCUIT_RESET_TIMEOUT": "1",
        "EMAIL_MAX_ATTEMPTS": "2",
        **{f"{service.upper()}_LOG_FORMAT": "json" for service in SERVICES},
    }


def caller_traceparent() -> tuple[str, str, str]:
    """A W3C traceparent as a caller's own trace would send it: (header, trace id, span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def place_traced_order(system) -> tuple[str, str, str]:
    """Place an order in a caller's trace: (order id, trace id, the caller's span id)."""
    sku = f"TRACED-{uuid.uuid4().hex[:6]}"
    await system.inventory.put(f"/stock/{sku}", json={"available": 5})
    traceparent, trace_id, caller_span = caller_traceparent()
    response = await system.orders.post(
        "/orders",
        json={
            "customer_email": "ada@example.com",
            "items": [{"sku": sku, "quantity": 1, "unit_price": "2.50"}],
            "shipping_address": {
                "name": "Ada", "line1": "1 Main St", "city": "Paris",
                "postal_code": "75001", "country": "FR",
            },
        },
        headers={"traceparent": traceparent},
    )  # fmt: skip
    assert response.status_code == 202, response.text
    return response.json()["order_id"], trace_id, caller_span


async def test_an_order_is_one_trace_from_the_request_through_every_service(
    system, receiver
) -> None:
    order_id, trace_id, caller_span = await place_traced_order(system)

    def whole_trace():
        spans = receiver.in_trace(trace_id)
        processed = {(s.service, s.name) for s in spans if s.name.endswith(" process")}
        expected = {
            ("inventory", "events.order.created.v2 process"),
            ("shipping", "events.order.created.v2 process"),
            ("email", "events.order.created.v2 process"),
            ("orders", "events.stock.reserved.v1 process"),
            ("email", "events.order.confirmed.v1 process"),
            ("shipping", "events.order.confirmed.v1 process"),
        }
        assert expected <= processed, f"{sorted(expected - processed)} missing"
        return spans

    spans = await eventually(whole_trace, timeout=30)
    assert (await system.orders.get("/metrics")).status_code == 200
    probes = [s.name for s in receiver.spans if "/health" in s.name or "/metrics" in s.name]
    assert probes == [], "readiness polls and scrapes are not traced"
    assert any(s.name == "POST /orders" for s in spans), [s.name for s in spans]
    assert {s.service for s in spans} == SERVICES
    by_id = {s.span_id: s for s in spans}
    [request] = [s for s in spans if s.parent_span_id == caller_span]
    assert (request.service, request.attributes.get("order.id")) == ("orders", order_id)
    assert all(s.parent_span_id in by_id for s in spans if s is not request), (
        "every span hangs from the request's"
    )
    for service in SERVICES:
        tagged = [s for s in spans if s.service == service and s.attributes.get("order.id")]
        assert {s.attributes["order.id"] for s in tagged} == {order_id}, service
    published = [s for s in spans if s.name == "events.order.created.v2 publish"]
    assert [s.service for s in published] == ["orders"]
    assert published[0].attributes["messaging.rabbitmq.destination.routing_key"] == (
        "order.created.v2"
    )
    event_id = published[0].attributes["messaging.message.id"]
    inventory_lines = [
        json.loads(line)
        for line in (system.stack.config.run_dir / "inventory.log").read_text().splitlines()
    ]
    [reserved] = [
        line
        for line in inventory_lines
        if line.get("order_id") == order_id and line.get("routing_key") == "order.created.v2"
    ]
    assert reserved["trace_id"] == trace_id, reserved
    assert reserved["routing_key"] == "order.created.v2" and reserved["event_id"]
    assert {"timestamp", "service", "logger", "message", "span_id"} <= reserved.keys()
    assert reserved["service"] == "inventory"
    created = {
        s.attributes.get("messaging.message.id")
        for s in spans
        if s.name == "events.order.created.v2 process"
    }
    assert created == {event_id}, "the published event's id, in each consumer's span"


async def test_a_retried_then_replayed_message_stays_in_its_trace(system, receiver) -> None:
    """An order.confirmed for an order email has not heard of is retried, then dead-
    lettered, then replayed: each attempt is a span of the trace it came with."""
    unknown = order_created()
    event = OrderConfirmedV1.caused_by(unknown, producer="orders", order_id=unknown.order_id)
    traceparent, trace_id, _ = caller_traceparent()
    await publish_raw(
        system.rabbitmq.url,
        event.routing_key(),
        event.model_dump_json().encode(),
        message_id=str(event.event_id),
        headers={"traceparent": traceparent},
    )

    def attempts_seen(count: int):
        def attempts():
            spans = receiver.in_trace(trace_id)
            seen = [s for s in spans if s.service == "email" and s.name.endswith(" process")]
            assert len(seen) >= count, seen
            return seen

        return attempts

    await eventually(attempts_seen(2), timeout=30)  # the first, and its retry

    async def dead_lettered() -> bool:
        letters = await peek_queue(system.rabbitmq.url, "email.dlq")
        return any(m.message_id == str(event.event_id) for m in letters)

    await eventually(dead_lettered, timeout=15)
    assert "email.work" in await system.replay_dead_letters("email")
    attempts = await eventually(attempts_seen(3), timeout=30)
    assert {s.attributes.get("messaging.message.id") for s in attempts} == {str(event.event_id)}
    assert {s.attributes.get("order.id") for s in attempts} == {str(unknown.order_id)}


async def test_the_timer_started_dispatch_is_a_trace_of_its_own_linked_to_the_order(
    system, receiver
) -> None:
    order_id, trace_id, _ = await place_traced_order(system)

    def shipped_in_the_dispatch_trace():
        dispatches = [
            s
            for s in receiver.spans
            if s.name == "shipment dispatch" and s.attributes.get("order.id") == order_id
        ]
        assert len(dispatches) == 1, dispatches
        [dispatch] = dispatches
        names = {(s.service, s.name) for s in receiver.in_trace(dispatch.trace_id)}
        assert ("orders", "events.shipment.dispatched.v1 process") in names, names
        return dispatch

    dispatch = await eventually(shipped_in_the_dispatch_trace, timeout=30)
    assert dispatch.trace_id != trace_id
    assert dispatch.links == (trace_id,)
    assert dispatch.service == "shipping" and dispatch.parent_span_id == ""


async def test_an_order_whose_email_is_retried_is_still_one_trace(system, receiver) -> None:
    """The SMTP server is away when the confirmation is due: email retries it through its
    wait queue, and every attempt is in the order's trace. (Last: it stops the sink.)"""

    def confirmation_attempts():
        """The first from the work queue, each retry from a retry queue (spans named
        `email.redeliver.email.retry.N process`: the wait queue
        dead-letters through `email.redeliver`), all of the one order.confirmed message."""
        spans = [s for s in receiver.in_trace(trace_id) if s.service == "email"]
        first = [s for s in spans if s.name == "events.order.confirmed.v1 process"]
        if not first:
            return []
        event_id = first[0].attributes["messaging.message.id"]
        return [
            s
            for s in spans
            if s.name.endswith(" process") and s.attributes["messaging.message.id"] == event_id
        ]

    assert system.stack.stop_service("smtp-sink") == 0
    try:
        order_id, trace_id, _ = await place_traced_order(system)
        await eventually(confirmation_attempts, timeout=30)  # tried while the sink is away
        assert not system.mails_about(order_id)
    finally:
        system.stack.start_smtp_sink()

    def mailed_after_attempts():
        attempts = confirmation_attempts()
        assert len(attempts) >= 2, attempts
        assert system.mails_about(order_id), "not mailed yet"
        return attempts

    attempts = await eventually(mailed_after_attempts, timeout=30)
    assert {s.attributes["order.id"] for s in attempts} == {order_id}
    assert any(s.name.startswith("email.redeliver.email.retry.") for s in attempts), attempts
