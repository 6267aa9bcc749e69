"""OpenTelemetry tracing, set up from the standard environment variables.

Tracing is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
is set, or `OTEL_TRACES_EXPORTER` names `otlp` or `console`; `OTEL_TRACES_EXPORTER=none`
turns it off. Off, nothing is installed: no provider, no middleware, no span.

On, the SDK reads the rest itself: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (the
service's name is the default), `OTEL_TRACES_SAMPLER` and `_ARG`, `OTEL_BSP_*`, and the
exporter's `OTEL_EXPORTER_OTLP_*` (OTLP over HTTP/protobuf).

An event carries the trace of what caused it: `outbox_headers` stores the writer's trace
context with the outbox row, and the relay publishes the row inside `continued_from` that
context, so FastStream's publish span (and the `traceparent` it writes) continues it.
"""

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from faststream.opentelemetry.middleware import TelemetryMiddleware
from faststream.rabbit.opentelemetry.provider import RabbitTelemetrySettingsProvider
from faststream.rabbit.response import RabbitPublishCommand
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

EXPORTERS = ("otlp", "console")

ORDER_ID = "order.id"
"""The span attribute a trace backend finds an order by."""
MESSAGE_ID = "messaging.message.id"


class _EventIdsInPublishSpans(RabbitTelemetrySettingsProvider):
    """FastStream's span attributes, with the message id (the event id) on publish spans
    too, where FastStream puts only the routing key and correlation id."""

    def get_publish_attrs_from_cmd(self, cmd: RabbitPublishCommand) -> dict[str, Any]:
        attributes = super().get_publish_attrs_from_cmd(cmd)
        if message_id := cmd.message_options.get("message_id"):
            attributes[MESSAGE_ID] = message_id
        return attributes


def messaging_middleware(provider: TracerProvider) -> TelemetryMiddleware:
    """FastStream's `RabbitTelemetryMiddleware`, built the same way, with event ids on every
    publish span."""
    return TelemetryMiddleware(
        settings_provider_factory=lambda _: _EventIdsInPublishSpans(),
        tracer_provider=provider,
    )


def tracing_requested(env: Mapping[str, str] = os.environ) -> bool:
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def tracer_provider(service: str, env: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """A provider exporting this service's spans, or None when tracing is off."""
    if not tracing_requested(env):
        return None
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter_name not in EXPORTERS:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={exporter_name!r}: use one of {', '.join(EXPORTERS)} or none"
        )
    detected = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
    named = str(detected.attributes.get(SERVICE_NAME, ""))
    name = service if named.startswith("unknown_service") else named
    provider = TracerProvider(resource=detected.merge(Resource({SERVICE_NAME: name})))
    if exporter_name == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)  # FastAPI's own telemetry uses the global one
    return provider


def _otlp_exporter() -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # its endpoint, headers and timeout from OTEL_EXPORTER_OTLP_*


def trace_headers() -> dict[str, str]:
    """The current trace context as W3C headers (empty when there is none), to store."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def linked_trace(name: str, cause: Mapping[str, Any], *, order_id: object) -> Iterator[None]:
    """Run the block as the root span of a trace of its own, linked to the trace `cause`
    headers carry: work a timer starts, caused by an earlier event."""
    caused_by = trace.get_current_span(propagate.extract(cause)).get_span_context()
    links = [trace.Link(caused_by)] if caused_by.is_valid else []
    tracer = trace.get_tracer(__name__)
    with tracer.start_as_current_span(
        name, context=context.Context(), links=links, attributes={ORDER_ID: str(order_id)}
    ):
        yield


def outbox_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """`headers` with the current trace context (`traceparent`) added, when there is one."""
    return {**(headers or {}), **trace_headers()}


@contextlib.contextmanager
def continued_from(headers: Mapping[str, Any]) -> Iterator[None]:
    """Run the block in the trace context `headers` carry (none: the block's own)."""
    if "traceparent" not in headers:
        yield
        return
    with attached(propagate.extract(headers)):
        yield


@contextlib.contextmanager
def attached(trace_context: context.Context) -> Iterator[None]:
    """Run the block in `trace_context`: work done for a caller by another task (a batch)."""
    token = context.attach(trace_context)
    try:
        yield
    finally:
        context.detach(token)


def current_context() -> context.Context:
    return context.get_current()


def tag_order(order_id: object) -> None:
    """Name the order on the current span, if one is recording."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(ORDER_ID, str(order_id))
