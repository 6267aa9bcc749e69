"""FastAPI dependencies shared by every service's routes."""

from typing import Annotated

import asyncpg
from fastapi import Depends, Request


async def get_pool(request: Request) -> asyncpg.Pool:
    """Async on purpose: FastAPI runs plain `def` dependencies in a thread pool."""
    return request.app.state.runtime.pool


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
