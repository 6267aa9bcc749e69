"""Composition root of the inventory service."""

from pathlib import Path

from fastapi import FastAPI

from contracts import StockRejectedV1, StockReleasedV1, StockReservedV1
from servicekit.consumer import EventConsumer
from servicekit.service import ConsumerFactory, ServiceSpec, build_app

from .config import InventorySettings
from .entrypoints.amqp import EVENT_HANDLERS, RESPONDERS
from .entrypoints.http import router
from .handlers import SERVICE

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def create_app(
    settings: InventorySettings | None = None, *, consumer_factory: ConsumerFactory = EventConsumer
) -> FastAPI:
    return build_app(
        ServiceSpec(
            name=SERVICE,
            settings=settings or InventorySettings(),
            routers=[router],
            handlers=EVENT_HANDLERS,
            publishes=[StockReservedV1, StockRejectedV1, StockReleasedV1],
            responders=RESPONDERS,
        ),
        consumer_factory=consumer_factory,
    )
