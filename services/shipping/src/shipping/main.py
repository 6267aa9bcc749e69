"""Composition root of the shipping service."""

from functools import partial
from pathlib import Path

from fastapi import FastAPI

from contracts import ShipmentCancelledV1, ShipmentDispatchedV1
from servicekit.consumer import EventConsumer
from servicekit.service import ConsumerFactory, ServiceSpec, build_app

from .config import ShippingSettings
from .entrypoints.amqp import event_handlers
from .entrypoints.dispatcher import run_dispatcher
from .entrypoints.http import router
from .handlers import SERVICE

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def create_app(
    settings: ShippingSettings | None = None, *, consumer_factory: ConsumerFactory = EventConsumer
) -> FastAPI:
    settings = settings or ShippingSettings()
    return build_app(
        ServiceSpec(
            name=SERVICE,
            settings=settings,
            routers=[router],
            handlers=event_handlers(settings),
            publishes=[ShipmentDispatchedV1, ShipmentCancelledV1],
            workers=[partial(run_dispatcher, interval=settings.dispatch_poll_interval)],
        ),
        consumer_factory=consumer_factory,
    )
