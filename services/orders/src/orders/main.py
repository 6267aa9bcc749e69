"""Composition root of the orders service."""

from fastapi import FastAPI
from servicekit.service import ServiceSpec, build_app

from . import handlers
from .config import OrdersSettings
from .entrypoints.amqp import EVENT_HANDLERS
from .entrypoints.http import router


def create_app(settings: OrdersSettings | None = None) -> FastAPI:
    return build_app(
        ServiceSpec(
            name=handlers.SERVICE,
            settings=settings or OrdersSettings(),
            routers=[router],
            handlers=EVENT_HANDLERS,
        )
    )
