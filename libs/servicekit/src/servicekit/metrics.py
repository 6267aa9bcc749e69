"""Prometheus metrics at `GET /metrics`, one registry per app.

Counted as things happen: FastStream's `RabbitPrometheusMiddleware` families (messages
received, processed, published, their durations), HTTP request durations by route and
status (`HttpMetrics`), outbox rows published and refused, retention rounds and the rows
they deleted. Read at scrape time: the
consumer's outcomes by event type, circuit states, the outbox's backlog and lag (one
query), and the service's own queue depths (passive declares on a channel of their own),
all cached for `SCRAPE_CACHE_SECONDS` so that scraping never loads the database or broker.
"""

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .outbox import unpublished_backlog

SCRAPE_CACHE_SECONDS = 5.0
QUEUE_READ_TIMEOUT = 2.0
"""A scrape while the broker is away answers without queue figures, rather than waiting."""

metrics_router = APIRouter(tags=["metrics"])


@dataclass
class ServiceMetrics:
    """A service's registry and what it counts itself."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.outbox_published = Counter(
            "outbox_published_events",
            "Outbox rows published and confirmed by the broker.",
            registry=self.registry,
        )
        self.outbox_refused = Counter(
            "outbox_refused_events",
            "Outbox rows the broker refused (unroutable or nacked), each retried later.",
            registry=self.registry,
        )

        self.retention_deleted = Counter(
            "retention_deleted_rows",
            "Rows the retention job deleted, by table.",
            ["table"],
            registry=self.registry,
        )
        self.retention_rounds = Counter(
            "retention_rounds",
            "Retention rounds run, by outcome (ok, or error: a table not cleaned up).",
            ["outcome"],
            registry=self.registry,
        )

    def count_published(self, published: int, refused: int) -> None:
        self.outbox_published.inc(published)
        self.outbox_refused.inc(refused)

    def count_retention_round(self, deleted: Mapping[str, int], ok: bool) -> None:
        for table, count in deleted.items():
            self.retention_deleted.labels(table).inc(count)
        self.retention_rounds.labels("ok" if ok else "error").inc()


@dataclass
class ScrapedState:
    """What the scrape reads from the database and broker, at most every few seconds."""

    read_at: float = float("-inf")
    outbox_pending: float | None = None
    outbox_oldest_age: float | None = None
    queues: dict[str, tuple[int, int]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class RuntimeCollector(Collector):
    """The figures read off the running service at scrape time."""

    def __init__(self, runtime: Any, state: ScrapedState) -> None:
        self._runtime, self._state = runtime, state

    def collect(self) -> Iterable[Metric]:
        outcomes = CounterMetricFamily(
            "consumer_messages",
            "Messages the consumer settled since start, by event type and outcome "
            "(processed, duplicate, retried, dead_lettered, resubmitted).",
            labels=["event_type", "outcome"],
        )
        for (event_type, outcome), count in sorted(self._runtime.consumer.outcomes.items()):
            outcomes.add_metric([event_type, outcome], count)
        yield outcomes
        circuits = GaugeMetricFamily(
            "circuit_open", "1 while the circuit breaker is open.", labels=["name"]
        )
        for circuit in self._runtime.circuits:
            circuits.add_metric([circuit.name], float(circuit.state == "open"))
        yield circuits
        state = self._state
        if state.outbox_pending is not None:
            yield GaugeMetricFamily(
                "outbox_pending_events",
                "Outbox rows not yet published (the relay's backlog).",
                value=state.outbox_pending,
            )
            yield GaugeMetricFamily(
                "outbox_oldest_pending_age_seconds",
                "Age of the oldest unpublished outbox row: the relay's lag.",
                value=state.outbox_oldest_age or 0.0,
            )
        ready = GaugeMetricFamily(
            "queue_ready_messages", "Messages ready in the service's queue.", labels=["queue"]
        )
        consumers = GaugeMetricFamily(
            "queue_consumers", "Consumers on the service's queue.", labels=["queue"]
        )
        for name, (messages, attached) in sorted(state.queues.items()):
            ready.add_metric([name], messages)
            consumers.add_metric([name], attached)
        yield ready
        yield consumers


async def _refresh(runtime: Any, state: ScrapedState) -> None:
    """Read the outbox and the queues again if the last reading is older than the cache."""
    async with state.lock:
        if time.monotonic() - state.read_at < SCRAPE_CACHE_SECONDS:
            return
        state.read_at = time.monotonic()
        if runtime.pool is not None:
            try:
                async with runtime.pool.acquire() as conn:
                    state.outbox_pending, state.outbox_oldest_age = await unpublished_backlog(conn)
            except Exception:  # noqa: BLE001 - database down: the figure is absent
                state.outbox_pending = state.outbox_oldest_age = None
        try:
            state.queues = await asyncio.wait_for(runtime.queue_depths(), QUEUE_READ_TIMEOUT)
        except Exception:  # noqa: BLE001 - broker away: the figures are absent
            state.queues = {}


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of the service's registry."""
    service_metrics: ServiceMetrics = request.app.state.metrics
    await _refresh(request.app.state.runtime, request.app.state.scraped)
    return Response(generate_latest(service_metrics.registry), media_type=CONTENT_TYPE_LATEST)


class HttpMetrics:
    """ASGI middleware: `http_request_duration_seconds{method, route, status}`, the route as
    declared (`/orders/{order_id}`), never the raw path."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.duration = Histogram(
            "http_request_duration_seconds",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), "500"

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.duration.labels(scope["method"], route, status).observe(
                time.perf_counter() - started
            )
