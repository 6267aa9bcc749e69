"""FastAPI dependencies shared by every service's routes."""

from typing import Annotated

import asyncpg
from fastapi import Depends, Request


def get_pool(request: Request) -> asyncpg.Pool:
    return request.app.state.runtime.pool


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
