"""Load a running system (`make run`) with orders; report throughput, latency and memory.

    uv run python deploy/benchmark.py --orders 1000 --concurrency 32

It stocks a fresh SKU, places the orders over HTTP, and waits until every order is
confirmed and every service has recorded its effect. Completion is read from the services'
databases, at POSTGRES_URL.
"""

import argparse
import asyncio
import os
import subprocess
import time
import uuid

import asyncpg
import httpx

from servicekit.registry import SERVICE_NAMES, SERVICES, service

ORDERS, INVENTORY = service("orders").default_url, service("inventory").default_url
ADDRESS = {
    "name": "Bench",
    "line1": "1 Load St",
    "city": "Paris",
    "postal_code": "75001",
    "country": "FR",
}


async def place_orders(
    count: int, concurrency: int, sku: str
) -> tuple[list[str], list[float], float, int]:
    """Place `count` orders; (accepted ids, latencies, seconds taken, transport errors)."""
    latencies: list[float] = []
    order_ids: list[str] = []
    transport_errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    body = {
        "customer_email": "bench@example.com",
        "items": [{"sku": sku, "quantity": 1, "unit_price": "1.00"}],
        "shipping_address": ADDRESS,
    }

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal transport_errors
        while not queue.empty():
            queue.get_nowait()
            started = time.perf_counter()
            try:
                response = await client.post("/orders", json=body)
            except httpx.TransportError:  # the order may or may not exist: counted, not retried
                transport_errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
            order_ids.append(response.json()["order_id"])

    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=ORDERS, limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return order_ids, latencies, time.perf_counter() - started, transport_errors


async def completed(postgres: str, order_ids: list[str]) -> dict[str, int]:
    ids = [uuid.UUID(o) for o in order_ids]
    queries = {
        "orders": "SELECT count(*) FROM orders WHERE order_id = ANY($1) AND status <> 'pending'",
        "inventory": "SELECT count(*) FROM reservations WHERE order_id = ANY($1)",
        "email": """SELECT count(*) FROM emails
                     WHERE order_id = ANY($1) AND kind = 'order_confirmation'""",
        "shipping": "SELECT count(*) FROM shipments WHERE order_id = ANY($1)",
    }
    counts = {}
    for name, query in queries.items():
        conn = await asyncpg.connect(f"{postgres}/{name}")
        try:
            counts[name] = await conn.fetchval(query, ids)
        finally:
            await conn.close()
    return counts


def resident_memory_mb() -> dict[str, float]:
    memory = {}
    for entry in SERVICES:
        pids = subprocess.run(
            ["pgrep", "-f", f"python -m {entry.package} serve"], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        memory[entry.name] = int(line.split()[1]) / 1024
    return memory


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    postgres = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")

    sku = f"BENCH-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=INVENTORY) as inventory:
        (await inventory.put(f"/stock/{sku}", json={"available": args.orders})).raise_for_status()
    memory_before = resident_memory_mb()

    started = time.perf_counter()
    order_ids, latencies, placing, errors = await place_orders(args.orders, args.concurrency, sku)
    while (counts := await completed(postgres, order_ids)) != dict.fromkeys(counts, len(order_ids)):
        if time.perf_counter() - started > 600:
            raise SystemExit(f"not complete after 600 s: {counts}")
        await asyncio.sleep(0.2)
    total = time.perf_counter() - started

    print(
        f"orders: {args.orders}, HTTP concurrency: {args.concurrency}, "
        f"accepted: {len(order_ids)}, transport errors: {errors}"
    )
    ms = {q: percentile(latencies, q) * 1000 for q in (0.5, 0.95, 0.99)}
    print(
        f"POST /orders: {len(order_ids) / placing:.0f} orders/s accepted; latency "
        f"p50 {ms[0.5]:.1f} ms, p95 {ms[0.95]:.1f} ms, p99 {ms[0.99]:.1f} ms"
    )
    print(
        f"end to end (confirmed, reserved, emailed, shipment prepared): {total:.1f} s, "
        f"{len(order_ids) / total:.0f} orders/s"
    )
    memory_after = resident_memory_mb()
    print(
        "resident memory, MB (before -> after): "
        + ", ".join(
            f"{name} {memory_before.get(name, 0):.0f} -> {memory_after.get(name, 0):.0f}"
            for name in SERVICE_NAMES
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
