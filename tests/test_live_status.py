"""An order's status, live, on the system as `REPLICAS=2 make run` starts it: a client on
either orders replica follows the order from its status when it subscribed to its final one,
over Server-Sent Events fed by each replica's own queue on RabbitMQ."""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from testkit.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

REPLICAS = 2
SERVICE_ENV = {"SHIPPING_DISPATCH_DELAY": "0.5"}
STREAM_TIMEOUT = httpx.Timeout(10, read=30)
"""A read waits at most as long as the status takes to change (pings come every 15 s)."""


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict]]:
    """(event, data) of each event as it arrives, comments left out."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line:
            if not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        elif fields:
            yield fields["event"], json.loads(fields["data"])
            fields = {}


@contextlib.asynccontextmanager
async def following(client: httpx.AsyncClient, order_id: str):
    """The order's status events from `client`'s replica, as they arrive."""
    url = f"/orders/{order_id}/events"
    async with client.stream("GET", url, timeout=STREAM_TIMEOUT) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield sse_events(response)


async def statuses(events: AsyncIterator[tuple[str, dict]], order_id: str) -> list[str]:
    """Each status the stream reports, until it ends."""
    seen = []
    async for name, data in events:
        assert (name, data["order_id"]) == ("status", order_id)
        seen.append(data["status"])
    return seen


@contextlib.asynccontextmanager
async def stock_held(system, sku: str):
    """Inventory cannot reserve `sku` while the block runs: its stock row is locked."""
    conn = await asyncpg.connect(system.databases.url("inventory"))
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM stock WHERE sku = $1 FOR UPDATE", sku)
            yield
    finally:
        await conn.close()


async def test_a_client_on_either_replica_follows_the_order_from_pending_to_shipped(
    system,
) -> None:
    sku = f"LIVE-{uuid.uuid4().hex[:6]}"
    await system.inventory.put(f"/stock/{sku}", json={"available": 5})
    async with contextlib.AsyncExitStack() as streams:
        async with stock_held(system, sku):
            order_id = await system.place((sku, 1))
            followers = [
                await streams.enter_async_context(following(system.http[replica], order_id))
                for replica in ("orders", "orders-2")
            ]
            for events in followers:
                name, now = await asyncio.wait_for(anext(events), timeout=10)
                assert (name, now["status"], now["event_type"]) == (
                    "status",
                    "pending",
                    "order.created",
                )
        # inventory reserves now; shipping dispatches half a second later
        followed = await asyncio.wait_for(
            asyncio.gather(*(statuses(events, order_id) for events in followers)), timeout=30
        )
    assert followed == [["confirmed", "shipped"], ["confirmed", "shipped"]]
    assert (await system.order(order_id))["status"] == "shipped"


async def test_the_stream_of_an_order_already_final_ends_at_once(system) -> None:
    order_id = await system.place((f"NONE-{uuid.uuid4().hex[:6]}", 1))  # none in stock

    async def rejected() -> bool:
        return (await system.order(order_id))["status"] == "rejected"

    await eventually(rejected, timeout=20)
    async with following(system.http["orders-2"], order_id) as events:
        assert await asyncio.wait_for(statuses(events, order_id), timeout=10) == ["rejected"]


async def test_an_unknown_order_has_no_stream(system) -> None:
    for replica in ("orders", "orders-2"):
        response = await system.http[replica].get(f"/orders/{uuid.uuid4()}/events")
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/json"


async def test_operators_list_the_orders_newest_first_a_page_at_a_time(system) -> None:
    placed = [await system.place((f"LIST-{uuid.uuid4().hex[:6]}", 1)) for _ in range(3)]
    first = await system.orders.get("/orders", params={"limit": 2})
    after = first.json()[-1]["order_id"]
    second = await system.http["orders-2"].get("/orders", params={"limit": 2, "after": after})
    assert first.status_code == second.status_code == 200
    listed = [order["order_id"] for order in first.json() + second.json()]
    assert listed[:3] == placed[::-1]
    assert set(first.json()[0]) == {
        "order_id",
        "status",
        "customer_name",
        "total",
        "currency",
        "created_at",
        "updated_at",
    }
