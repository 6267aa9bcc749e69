"""Build a service's FastAPI app: HTTP routes, consumers, outbox relay, retention and health,
in one process.

`build_app` is what each service's `create_app()` calls; nothing touches the network until
the app's lifespan starts, so tests can build as many apps as they like. A test deploy
changes what the app is built from through its parameters (`consumer_factory`), never by
patching this module's globals.
"""

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustChannel
from fastapi import APIRouter, FastAPI
from faststream.rabbit import Channel, RabbitBroker
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from faststream.security import BaseSecurity
from starlette.types import ASGIApp, Receive, Scope, Send

from contracts import Event

from .asyncapi import SERVER_URL, asyncapi_router, document_publishes
from .audit import audit_router
from .breaker import CircuitBreaker
from .consumer import EventConsumer, Handler
from .db import create_pool
from .health import health_router
from .metrics import HttpMetrics, RuntimeCollector, ScrapedState, ServiceMetrics, metrics_router
from .outbox import OutboxRelay, noting_writes
from .retention import RetentionJob, RetentionRule, kit_rules
from .rpc import Responder, subscribe_responder
from .settings import ServiceSettings
from .telemetry import messaging_middleware, tracer_provider
from .topology import Drift, ServiceTopology

log = logging.getLogger(__name__)


@dataclass
class ServiceSpec:
    name: str
    settings: ServiceSettings
    routers: Sequence[APIRouter]
    handlers: Mapping[type[Event], Handler]
    applied_alone: Collection[type[Event]] = ()
    """Events whose handlers act outside the database (an email sent): never batched, so a
    batch that fails to commit does not repeat the act (`EventConsumer`)."""
    version: str = "0.1.0"
    publishes: Sequence[type[Event]] = ()
    """Every event the service writes to its outbox: documented at /asyncapi, checked
    against what consumers read."""
    circuits: Sequence[CircuitBreaker] = ()
    """Circuit breakers around the service's dependencies, shown by readiness."""
    responders: Sequence[Responder] = ()
    """Queries the service answers over request-reply."""
    workers: Sequence[Callable[[asyncpg.Pool], Coroutine[Any, Any, None]]] = ()
    """Background loops run for the life of the process on the service's pool, e.g. a timer
    (bind anything else they need with `functools.partial`); cancelled on stop."""
    retention_rules: Sequence[RetentionRule] = ()
    """The service's own tables' retention, beside the kit's (outbox, processed_messages)."""
    on_stop: Sequence[Callable[[], None]] = ()
    """Called once consumers and workers have stopped: release what the service holds open
    (e.g. idle SMTP connections)."""


@dataclass
class ServiceRuntime:
    """The live parts of a running service, reachable from routes as `app.state.runtime`."""

    broker: RabbitBroker
    consumer: EventConsumer
    settings: ServiceSettings
    circuits: Sequence[CircuitBreaker] = ()
    pool: asyncpg.Pool | None = None
    broker_ready: bool = False
    broker_error: str | None = None
    topology_drift: list[Drift] = field(default_factory=list)
    """Queues the broker holds with other arguments than this release declares."""
    topology_channel: AbstractRobustChannel | None = field(default=None, repr=False)
    """The channel the topology is declared on, and nothing consumes on (see
    `ServiceTopology.declare`). Held here for the connection's life: the robust connection
    keeps only weak references to its channels, and re-declares what this one declared
    after a reconnect."""

    @property
    def topology(self) -> ServiceTopology:
        return self.consumer.topology

    async def queue_depths(self) -> dict[str, tuple[int, int]]:
        """Each of the service's queues: (messages ready, consumers), from passive declares
        on a channel of their own, opened again only after a refused declare closed it."""
        depths = {}
        connection = await self.broker.connect()
        channel = None
        try:
            for queue in self.topology.all_queues:
                if channel is None or channel.is_closed:
                    channel = await connection.channel(publisher_confirms=False)
                try:
                    declared = await channel.declare_queue(queue.name, passive=True)
                except Exception:  # noqa: BLE001 - missing: not reported
                    continue
                result = declared.declaration_result
                depths[queue.name] = (result.message_count or 0, result.consumer_count or 0)
        finally:
            if channel is not None and not channel.is_closed:
                await channel.close()
        return depths

    async def connect_broker(self, max_delay: float = 10.0) -> None:
        """Connect, declare the topology and start consuming, retrying until it works.

        Runs in the background so HTTP (and the outbox behind POST requests) serves while
        RabbitMQ is still unreachable.
        """
        delay = 0.5
        while True:
            try:
                connection = await self.broker.connect()
                if self.topology_channel is None or self.topology_channel.is_closed:
                    self.topology_channel = await connection.channel(publisher_confirms=False)
                declared = await self.topology.declare(self.topology_channel)
                self.consumer.consume(declared.topology)
                self.topology_drift = declared.drift
                await self.broker.start()  # each subscriber opens its own channel and QoS
            except Exception as exc:  # noqa: BLE001 - unreachable or refused: report and retry
                self.broker_error = f"{type(exc).__name__}: {exc}"
                log.warning("RabbitMQ not ready (%s); retrying in %.1fs", self.broker_error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
            else:
                self.broker_ready, self.broker_error = True, None
                queues = ", ".join(q.name for q in self.topology.consuming_queues)
                log.info("consuming from %s", queues)
                for drift in self.topology_drift:
                    log.warning(
                        "queue %s is not as this release declares it (%s): used as it is; "
                        "`orderctl topology plan` shows the change, `apply` makes it",
                        drift.queue,
                        drift.difference,
                    )
                return


ConsumerFactory = Callable[..., EventConsumer]
"""Called as `EventConsumer` is, and returns one (the consumer, its topology included): the
seam through which a test deploy wraps the handlers or reads fewer versions."""


def build_app(spec: ServiceSpec, *, consumer_factory: ConsumerFactory = EventConsumer) -> FastAPI:
    settings = spec.settings
    tracing = tracer_provider(spec.name)
    metrics = ServiceMetrics()
    middlewares: list[Any] = [
        RabbitPrometheusMiddleware(registry=metrics.registry, app_name=spec.name)
    ]
    if tracing:
        middlewares.append(messaging_middleware(tracing))
    broker = RabbitBroker(
        settings.rabbitmq_url,
        default_channel=Channel(on_return_raises=True),
        graceful_timeout=settings.graceful_timeout,
        app_id=spec.name,
        client_properties={"connection_name": spec.name},
        logger=logging.getLogger(f"{spec.name}.broker"),
        log_level=logging.DEBUG,  # per-message lines; the consumer logs each event id itself
        specification_url=SERVER_URL,
        apply_types=False,  # handlers take one argument: no dependency injection per message
        middlewares=middlewares,
        security=_tls(settings),
    )
    runtime: ServiceRuntime

    def pool() -> asyncpg.Pool:
        assert runtime.pool is not None, "the pool exists once the app has started"
        return runtime.pool

    relay = OutboxRelay(
        pool,
        broker,
        batch_size=settings.outbox_batch_size,
        poll_interval=settings.outbox_poll_interval,
        sweep_interval=settings.outbox_sweep_interval,
        confirm_timeout=settings.publish_confirm_timeout,
        on_published=metrics.count_published,
    )
    retention = RetentionJob(
        pool,
        [*kit_rules(settings), *spec.retention_rules],
        interval=settings.retention_interval,
        batch_size=settings.retention_batch_size,
        on_round=metrics.count_retention_round,
    )
    consumer = consumer_factory(
        spec.name,
        pool,
        broker,
        spec.handlers,
        prefetch=settings.prefetch,
        batch_size=settings.consumer_batch_size,
        applied_alone=spec.applied_alone,
        max_attempts=settings.max_attempts,
        retry_delays=settings.retry_delays,
        hand_over=relay.hand_over,
    )
    runtime = ServiceRuntime(
        broker=broker, consumer=consumer, settings=settings, circuits=spec.circuits
    )
    for responder in spec.responders:
        subscribe_responder(broker, responder, pool)
    document_publishes(broker, spec.publishes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.pool = await create_pool(settings.database_url, settings.db_pool_size)
        connecting = asyncio.create_task(runtime.connect_broker(), name="connect-broker")
        relaying = asyncio.create_task(relay.run(), name="outbox-relay")
        retaining = asyncio.create_task(retention.run(), name="retention")
        working = [
            asyncio.create_task(work(runtime.pool), name=_name_of(work)) for work in spec.workers
        ]
        try:
            yield
        finally:
            log.info(
                "shutting down: consumers stop, in-flight handlers get %ss",
                settings.graceful_timeout,
            )
            connecting.cancel()
            relay.stop()
            retention.stop()
            for task in working:
                task.cancel()
            await asyncio.gather(connecting, relaying, retaining, *working, return_exceptions=True)
            await broker.stop()
            for release in spec.on_stop:
                release()
            await runtime.pool.close()
            if tracing:
                tracing.shutdown()  # exports the spans still buffered
            log.info("stopped")

    app = FastAPI(
        title=spec.name,
        version=spec.version,
        lifespan=lifespan,
        telemetry={
            "tracing": tracing is not None,  # a server span per request, `traceparent` continued
            "tracer_provider": tracing,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "exclude": _untraced,
        },
    )
    app.add_middleware(WakeRelayAfterWrites, wake=relay.wake)
    app.add_middleware(HttpMetrics, registry=metrics.registry)
    metrics.registry.register(RuntimeCollector(runtime, scraped := ScrapedState()))
    app.state.runtime = runtime
    app.state.relay = relay
    app.state.metrics = metrics
    app.state.scraped = scraped
    app.state.spec = spec
    app.include_router(health_router)
    app.include_router(asyncapi_router)
    app.include_router(audit_router)
    app.include_router(metrics_router)
    for router in spec.routers:
        app.include_router(router)
    return app


def _tls(settings: ServiceSettings) -> BaseSecurity | None:
    """TLS towards RabbitMQ for an `amqps://` URL, verified against the settings' CA."""
    context = settings.rabbitmq_ssl_context()
    return None if context is None else BaseSecurity(ssl_context=context)


UNTRACED_PATHS = ("/health", "/metrics")


def _untraced(scope: Scope) -> bool:
    """Probes and scrapes: no span for them."""
    return scope.get("path", "").startswith(UNTRACED_PATHS)


class WakeRelayAfterWrites:
    """ASGI middleware: after a request that wrote events for the relay's rounds (rather
    than handing them over), wake the outbox relay, so they are published at once.

    Plain ASGI rather than `@app.middleware("http")`, which costs a task per request."""

    READS = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(self, app: ASGIApp, wake: Callable[[], None]) -> None:
        self.app = app
        self.wake = wake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in self.READS:
            await self.app(scope, receive, send)
            return
        with noting_writes() as wrote_for_the_relay:
            await self.app(scope, receive, send)
        if wrote_for_the_relay():
            self.wake()


def _name_of(work: Callable[..., object]) -> str:
    """A worker's task name: its function's, through any `functools.partial`."""
    while isinstance(work, functools.partial):
        work = work.func
    return getattr(work, "__name__", "worker")
