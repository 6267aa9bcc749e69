"""FastAPI dependencies shared by every service's routes."""

from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from .service import ServiceRuntime


async def get_pool(request: Request) -> asyncpg.Pool:
    """Async on purpose: FastAPI runs plain `def` dependencies in a thread pool."""
    return request.app.state.runtime.pool


async def get_runtime(request: Request) -> ServiceRuntime:
    return request.app.state.runtime


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
RuntimeDep = Annotated[ServiceRuntime, Depends(get_runtime)]
