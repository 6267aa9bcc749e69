import json
from uuid import uuid4

import pytest
from faststream.rabbit import RabbitBroker
from pydantic import ValidationError

from contracts import Event, OrderCreatedV1, OrderCreatedV2, StockReservedV1
from servicekit.consumer import EventConsumer, PermanentFailure, decode_event
from servicekit.settings import ServiceSettings

KNOWN = {StockReservedV1.routing_key(): StockReservedV1}
OPERATOR_PUBLIC_KEY = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEANybK6QRL9cSuHl0kCFMTl+HDOwFMnrAAOH3PvYZ0asc=\n"
    "-----END PUBLIC KEY-----\n"
)


def stock_reserved_body(**changes: object) -> bytes:
    event = StockReservedV1(
        order_id=uuid4(),
        lines=[{"sku": "A", "quantity": 1}],
        correlation_id=uuid4(),
        producer="inventory",
    )
    return json.dumps({**json.loads(event.model_dump_json()), **changes}).encode()


def test_a_valid_body_decodes_to_its_event_class() -> None:
    assert isinstance(decode_event(stock_reserved_body(), KNOWN), StockReservedV1)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b"[1, 2]", "JSON list, not an event object"),
        (stock_reserved_body(lines=[]), "violates contract stock.reserved.v1: lines"),
        (stock_reserved_body(order_id="nope"), "violates contract stock.reserved.v1: order_id"),
        (stock_reserved_body(schema_version=9), "unknown event 'stock.reserved.v9'"),
    ],
)
def test_bad_messages_are_permanent_failures_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PermanentFailure, match=reason.replace("[", r"\[").replace("(", r"\(")):
        decode_event(body, KNOWN)


def test_events_this_service_does_not_handle_are_refused() -> None:
    body = json.dumps({"event_type": OrderCreatedV1.TYPE, "schema_version": 1}).encode()
    with pytest.raises(PermanentFailure, match="handled here: stock.reserved.v1"):
        decode_event(body, KNOWN)


def test_a_consumer_binds_its_work_queue_to_exactly_the_versions_it_reads() -> None:
    async def handle(conn, event) -> None: ...

    def before_v2(event_class: type[Event]) -> tuple[type[Event], ...]:
        return (OrderCreatedV1,) if event_class is OrderCreatedV2 else (event_class,)

    def consumer(**options) -> EventConsumer:
        handlers = {OrderCreatedV2: handle, StockReservedV1: handle}
        return EventConsumer(
            "probe", lambda: None, RabbitBroker(), handlers, prefetch=1, max_attempts=1, **options
        )

    assert set(consumer().topology.routing_keys) == {
        "order.created.v2",
        "order.created.v1",
        "stock.reserved.v1",
    }
    assert set(consumer(readable_as=before_v2).topology.routing_keys) == {
        "order.created.v1",
        "stock.reserved.v1",
    }


class ExampleSettings(ServiceSettings):
    database_url: str = "postgresql://postgres@127.0.0.1/example"
    http_port: int = 9000


def test_pool_must_cover_prefetch() -> None:
    with pytest.raises(ValidationError, match="at least prefetch \\+ 3"):
        ExampleSettings(prefetch=30, db_pool_size=20)


def test_production_refuses_the_guest_account() -> None:
    with pytest.raises(ValidationError, match="guest"):
        ExampleSettings(environment="production")
    ok = ExampleSettings(
        environment="production",
        rabbitmq_url="amqp://orders:s3cret@rabbit/",
        operator_token_public_key=OPERATOR_PUBLIC_KEY,
    )
    assert ok.environment == "production"


def test_tracing_is_off_unless_an_exporter_or_endpoint_is_set() -> None:
    from servicekit.telemetry import tracer_provider, tracing_requested

    assert not tracing_requested({})
    assert tracer_provider("orders", {}) is None
    assert not tracing_requested(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing_requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert tracing_requested({"OTEL_TRACES_EXPORTER": "console"})


def test_an_unknown_trace_exporter_is_refused_by_name() -> None:
    from servicekit.telemetry import tracer_provider

    with pytest.raises(ValueError, match="'zipkin'"):
        tracer_provider("orders", {"OTEL_TRACES_EXPORTER": "zipkin"})


def test_the_service_name_is_the_default_and_otel_service_name_wins(monkeypatch) -> None:
    from servicekit.telemetry import tracer_provider

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    provider = tracer_provider("email", {"OTEL_TRACES_EXPORTER": "console"})
    assert provider.resource.attributes["service.name"] == "email"
    assert provider.resource.attributes["deployment.environment"] == "test"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "email-eu")
    renamed = tracer_provider("email", {"OTEL_TRACES_EXPORTER": "console"})
    assert renamed.resource.attributes["service.name"] == "email-eu"
