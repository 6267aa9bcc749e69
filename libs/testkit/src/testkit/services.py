"""A service under test: its app in-process, or its command line with seams of its
composition root set (what the fault and rollout launchers run as a separate process);
or a probe service built from servicekit alone, with a test's own handlers."""

import contextlib
import functools
import importlib
import sys
import typing
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from contracts import Event
from servicekit import cli
from servicekit.consumer import Handler
from servicekit.registry import SERVICES
from servicekit.rpc import Responder
from servicekit.service import ServiceSpec, build_app
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


class ProbeSettings(ServiceSettings):
    """A probe service's settings: no HTTP port (it runs in-process), a prefix of its own."""

    model_config = {"env_prefix": "PROBE_"}
    http_port: int = 0


@contextlib.asynccontextmanager
async def probe_service(
    handlers: Mapping[type[Event], Handler],
    *,
    rabbitmq_url: str,
    database_url: str,
    migrations: Path,
    name: str = "probe",
    responders: Sequence[Responder] = (),
    applied_alone: Collection[type[Event]] = (),
    **settings: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """A service built from servicekit alone with these handlers (and responders), standing
    in for a real one: run in-process like `service_under_test`, with `settings` set."""

    def create_app(probe_settings: ProbeSettings) -> FastAPI:
        spec = ServiceSpec(
            name,
            probe_settings,
            routers=[],
            handlers=handlers,
            responders=responders,
            applied_alone=applied_alone,
        )
        return build_app(spec)

    probe_settings = ProbeSettings(database_url=database_url, rabbitmq_url=rabbitmq_url, **settings)
    async with service_under_test(create_app, probe_settings, migrations, name) as client:
        yield client


def run_command_line(package: str, command: Sequence[str], **seams: Any) -> None:
    """Run `python -m <package> <command>` as the service's own `__main__` does, but with
    `create_app(settings, **seams)`, e.g. `consumer_factory=...`."""
    composition_root = importlib.import_module(f"{package}.main")
    [entry] = [s for s in SERVICES if s.package == package]
    sys.argv = [f"{package} (test launcher)", *command]
    cli.main(
        entry.name,
        _settings_class(composition_root.create_app),
        functools.partial(composition_root.create_app, **seams),
        composition_root.MIGRATIONS,
    )


def _settings_class(create_app: Callable[..., FastAPI]) -> type[ServiceSettings]:
    """The class of `create_app(settings: <it> | None = None)`, every service's signature."""
    hint = typing.get_type_hints(create_app)["settings"]
    [settings_class] = [cls for cls in typing.get_args(hint) if cls is not type(None)]
    return settings_class
