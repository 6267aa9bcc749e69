"""One log format for every service: text (time, service, level, logger, message) for a
terminal, or JSON lines for a log pipeline (`<SVC>_LOG_FORMAT=json`).

A JSON line carries `timestamp`, `level`, `service`, `logger` and `message`, and, where they
are known, `trace_id` and `span_id` (the current span) and `event_id`, `order_id` and
`routing_key` (the event being handled): a handler's own lines included, without its
passing them.
"""

import contextlib
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Literal

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]

_handling: ContextVar[dict[str, str] | None] = ContextVar("handling", default=None)


@contextlib.contextmanager
def handling(event: Any) -> Iterator[None]:
    """Within the block, every log line names `event` (its id, order and routing key)."""
    fields = {"event_id": str(event.event_id), "routing_key": event.routing_key()}
    if (order_id := getattr(event, "order_id", None)) is not None:
        fields["order_id"] = str(order_id)
    token = _handling.set(fields)
    try:
        yield
    finally:
        _handling.reset(token)


class _Known(logging.Filter):
    """Adds what is known about the work at hand to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        if fields := _handling.get():
            record.__dict__.update(fields)
        return True


_QUERY_TOKEN = re.compile(r"(access_token=)[^&\s\"]+")


class _TokensRedacted(logging.Filter):
    """Masks a token passed in a URL (`?access_token=`, which a browser's EventSource must
    use) in every line, the access log's request lines included."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "access_token=" in message:
            record.msg, record.args = _QUERY_TOKEN.sub(r"\1<redacted>", message), ()
        return True


def configure_logging(service: str, level: str, log_format: LogFormat = "text") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_TokensRedacted())
    if log_format == "json":
        handler.addFilter(_Known())
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger"},
                static_fields={"service": service},
                timestamp=True,
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
        )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("aiormq").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("aio_pika").setLevel(max(logging.WARNING, logging.getLevelName(level)))
