"""Each service's command line: `python -m <service> serve|migrate`."""

import argparse
import asyncio
import logging
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
        logging.getLogger(name).info("serving on http://%s:%s", settings.http_host, settings.http_port)
        uvicorn.run(
            create_app(settings),
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            timeout_graceful_shutdown=int(settings.graceful_timeout),
        )
