"""Composition root of the orders service."""

from pathlib import Path

from fastapi import FastAPI

from contracts import (
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderCreatedV1,
    OrderCreatedV2,
    OrderRejectedV1,
    OrderShippedV1,
)
from servicekit.consumer import EventConsumer
from servicekit.live import LiveHub, subscribe_live
from servicekit.service import ConsumerFactory, ServiceSpec, build_app

from .adapters.repository import expired_idempotency_keys
from .config import OrdersSettings
from .entrypoints.amqp import EVENT_HANDLERS
from .entrypoints.http import router
from .handlers import SERVICE, STATUS_ANNOUNCED_BY, OrderPlacing

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def create_app(
    settings: OrdersSettings | None = None, *, consumer_factory: ConsumerFactory = EventConsumer
) -> FastAPI:
    settings = settings or OrdersSettings()
    app = build_app(
        ServiceSpec(
            name=SERVICE,
            settings=settings,
            routers=[router],
            handlers=EVENT_HANDLERS,
            publishes=[
                OrderCreatedV1,
                OrderCreatedV2,
                OrderConfirmedV1,
                OrderRejectedV1,
                OrderCancelledV1,
                OrderShippedV1,
            ],
            retention_rules=[expired_idempotency_keys(settings.idempotency_key_retention)],
        ),
        consumer_factory=consumer_factory,
    )
    app.state.live = LiveHub()
    subscribe_live(
        app.state.runtime.broker,
        app.state.live,
        owner=SERVICE,
        routing_keys=[announcement.routing_key() for announcement in STATUS_ANNOUNCED_BY],
    )
    app.state.placing = OrderPlacing(
        lambda: app.state.runtime.pool,
        versions=settings.order_created_versions,
        batch_size=settings.placing_batch_size,
        key_retention=settings.idempotency_key_retention,
        hand_over=app.state.relay.hand_over,
    )
    return app
