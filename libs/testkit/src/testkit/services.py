"""A service under test, its app run in-process."""

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from servicekit import cli
from servicekit.settings import ServiceSettings

from .polling import eventually


@contextlib.asynccontextmanager
async def running_service(app: FastAPI, name: str) -> AsyncIterator[httpx.AsyncClient]:
    """Run a service app in-process (lifespan, consumers, relay); an HTTP client once ready."""
    async with (
        LifespanManager(app, startup_timeout=30, shutdown_timeout=30),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=f"http://{name}"
        ) as client,
    ):

        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        await eventually(ready, timeout=30)
        yield client


@contextlib.asynccontextmanager
async def service_under_test(
    create_app: Callable[[Any], FastAPI], settings: ServiceSettings, migrations: Path, name: str
) -> AsyncIterator[httpx.AsyncClient]:
    """Prepare the service's database exactly as `serve` does, then run it in-process."""
    await cli.prepare_database(settings, migrations)
    async with running_service(create_app(settings), name) as client:
        yield client

