"""Build a service's FastAPI app: HTTP routes, consumers, outbox relay and health, in one process.

`build_app` is what each service's `create_app()` calls; nothing touches the network until
the app's lifespan starts, so tests can build as many apps as they like.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import asyncpg
from fastapi import APIRouter, FastAPI
from faststream.rabbit import Channel, RabbitBroker

from contracts import Event

from .breaker import CircuitBreaker
from .consumer import EventConsumer, Handler
from .db import create_pool
from .health import health_router
from .outbox import OutboxRelay
from .settings import ServiceSettings
from .topology import ServiceTopology

log = logging.getLogger(__name__)


@dataclass
class ServiceSpec:
    name: str
    settings: ServiceSettings
    routers: Sequence[APIRouter]
    handlers: Mapping[type[Event], Handler]
    version: str = "0.1.0"
    circuits: Sequence[CircuitBreaker] = ()
    """Circuit breakers around the service's dependencies, shown by readiness."""


@dataclass
class ServiceRuntime:
    """The live parts of a running service, reachable from routes as `app.state.runtime`."""

    broker: RabbitBroker
    consumer: EventConsumer
    circuits: Sequence[CircuitBreaker] = ()
    pool: asyncpg.Pool | None = None
    broker_ready: bool = False
    broker_error: str | None = None

    @property
    def topology(self) -> ServiceTopology:
        return self.consumer.topology

    async def connect_broker(self, max_delay: float = 10.0) -> None:
        """Connect, declare the topology and start consuming, retrying until it works.

        Runs in the background so HTTP (and the outbox behind POST requests) serves while
        RabbitMQ is still unreachable.
        """
        delay = 0.5
        while True:
            try:
                await self.broker.connect()
                await self.topology.declare(self.broker)
                await self.broker.start()
            except Exception as exc:  # noqa: BLE001 - unreachable or refused: report and retry
                self.broker_error = f"{type(exc).__name__}: {exc}"
                log.warning("RabbitMQ not ready (%s); retrying in %.1fs", self.broker_error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
            else:
                self.broker_ready, self.broker_error = True, None
                queues = ", ".join(q.name for q in self.topology.consuming_queues)
                log.info("consuming from %s", queues)
                return


def build_app(spec: ServiceSpec) -> FastAPI:
    settings = spec.settings
    broker = RabbitBroker(
        settings.rabbitmq_url,
        default_channel=Channel(on_return_raises=True),
        graceful_timeout=settings.graceful_timeout,
        app_id=spec.name,
        client_properties={"connection_name": spec.name},
        logger=logging.getLogger(f"{spec.name}.broker"),
        log_level=logging.DEBUG,  # per-message lines; the consumer logs each event id itself
    )
    topology = ServiceTopology(
        spec.name, tuple(cls.routing_key() for cls in spec.handlers), settings.retry_delays
    )
    runtime: ServiceRuntime

    def pool() -> asyncpg.Pool:
        assert runtime.pool is not None, "the pool exists once the app has started"
        return runtime.pool

    consumer = EventConsumer(
        topology,
        pool,
        broker,
        spec.handlers,
        prefetch=settings.prefetch,
        max_attempts=settings.max_attempts,
    )
    runtime = ServiceRuntime(broker=broker, consumer=consumer, circuits=spec.circuits)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.pool = await create_pool(settings.database_url, settings.db_pool_size)
        relay = OutboxRelay(
            runtime.pool,
            broker,
            batch_size=settings.outbox_batch_size,
            poll_interval=settings.outbox_poll_interval,
            confirm_timeout=settings.publish_confirm_timeout,
        )
        connecting = asyncio.create_task(runtime.connect_broker(), name="connect-broker")
        relaying = asyncio.create_task(relay.run(), name="outbox-relay")
        try:
            yield
        finally:
            log.info(
                "shutting down: consumers stop, in-flight handlers get %ss",
                settings.graceful_timeout,
            )
            connecting.cancel()
            relay.stop()
            await asyncio.gather(connecting, relaying, return_exceptions=True)
            await broker.stop()
            await runtime.pool.close()
            log.info("stopped")

    app = FastAPI(title=spec.name, version=spec.version, lifespan=lifespan)
    app.state.runtime = runtime
    app.include_router(health_router)
    for router in spec.routers:
        app.include_router(router)
    return app
