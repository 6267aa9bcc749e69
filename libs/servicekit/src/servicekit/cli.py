"""Each service's command line: `python -m <service> serve|migrate`."""

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from .db import ensure_database, migrate
from .logs import configure_logging
from .settings import ServiceSettings


async def prepare_database(settings: ServiceSettings, migrations: Path) -> None:
    """Create the service's database if missing and apply its pending migrations."""
    await ensure_database(settings.database_url)
    await migrate(settings.database_url, migrations)


def _exit_cleanly_after_graceful_shutdown() -> None:
    """Make SIGTERM/SIGINT end the process with 0 once uvicorn has shut down gracefully.

    uvicorn handles the signal itself (stop HTTP, then the lifespan: consumers finish
    in-flight messages), restores the previous handler and raises the signal again; the
    default handler would report death by signal to the supervisor.
    """

    def exit_zero(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, exit_zero)
    signal.signal(signal.SIGINT, exit_zero)


def main(
    name: str,
    settings_class: type[ServiceSettings],
    create_app: Callable[[ServiceSettings], FastAPI],
    migrations: Path,
) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {name}")
    parser.add_argument(
        "command",
        choices=["serve", "migrate"],
        help="serve: migrate, then serve HTTP and consume events; migrate: migrate and exit",
    )
    args = parser.parse_args()
    settings = settings_class()
    configure_logging(name, settings.log_level)
    asyncio.run(prepare_database(settings, migrations))
    if args.command == "serve":
        logging.getLogger(name).info(
            "serving on http://%s:%s", settings.http_host, settings.http_port
        )
        _exit_cleanly_after_graceful_shutdown()
        uvicorn.run(
            create_app(settings),
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            timeout_graceful_shutdown=int(settings.graceful_timeout),
        )
