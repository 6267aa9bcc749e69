"""Liveness and readiness, the same for every service."""

import asyncio
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

health_router = APIRouter(prefix="/health", tags=["health"])

CHECK_TIMEOUT = 2.0


@health_router.get("/live")
async def live() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "alive"}


@health_router.get(
    "/ready",
    responses={503: {"description": "Not ready: the body's `checks` say what failed"}},
)
async def ready(request: Request) -> JSONResponse:
    """200 only while the database and RabbitMQ answer and the consumers are attached.

    An open circuit does not make the service unready: it keeps consuming, and holds
    messages in its retry queues until the dependency is back.
    """
    runtime = request.app.state.runtime
    checks: dict[str, Any] = {
        "database": await _check_database(runtime),
        "rabbitmq": await _check_rabbitmq(runtime),
        "consumers": _check_consumers(runtime),
    }
    is_ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {
            "status": "ready" if is_ready else "not ready",
            "checks": checks,
            "messages": asdict(runtime.consumer.stats),
            "circuits": {circuit.name: circuit.status() for circuit in runtime.circuits},
        },
        status_code=200 if is_ready else 503,
    )


async def _check_database(runtime: Any) -> str:
    if runtime.pool is None:
        return "pool not open"
    try:
        await asyncio.wait_for(runtime.pool.fetchval("SELECT 1"), CHECK_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return f"unreachable: {type(exc).__name__}: {exc}"
    return "ok"


async def _check_rabbitmq(runtime: Any) -> str:
    if not runtime.broker_ready:
        return f"not connected: {runtime.broker_error or 'connecting'}"
    if not await runtime.broker.ping(timeout=CHECK_TIMEOUT):
        return "connection lost; reconnecting"
    return "ok"


def _check_consumers(runtime: Any) -> str:
    idle = [
        queue.name
        for queue, subscriber in zip(
            runtime.topology.consuming_queues, runtime.consumer.subscribers, strict=True
        )
        if not (runtime.broker_ready and subscriber.running)
    ]
    return f"not consuming from {', '.join(idle)}" if idle else "ok"
