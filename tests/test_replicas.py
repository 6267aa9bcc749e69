"""Two processes of every service, as `REPLICAS=2 make run` starts them: competing consumers
on each service's queues, one database per service. Orders placed on either orders replica
flow through; one replica of each service killed, or every replica of a service restarted in
turn, under a stream of orders loses and doubles nothing, and the audit says so."""

import asyncio
import contextlib
import itertools
import signal
import uuid

import httpx
import pytest

from servicekit.registry import SERVICE_NAMES
from servicekit.topology import work_queue_name
from testkit.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

REPLICAS = 2
SERVICE_ENV = {
    # Shipments leave a second after confirmation, picked up by either replica's dispatcher.
    "SHIPPING_DISPATCH_DELAY": "1",
    "SHIPPING_DISPATCH_POLL_INTERVAL": "0.2",
}


class BalancedOrderStream:
    """Places an order every `pace` seconds until stopped, as a client behind a load
    balancer does: each on the next orders replica, and a request that got no answer again,
    with its Idempotency-Key, on the next, so an order is never placed twice nor lost to a
    replica going away."""

    def __init__(self, system, sku: str, pace: float = 0.1) -> None:
        self.system = system
        self.sku = sku
        self.pace = pace
        self.accepted: list[str] = []
        self._stopping = asyncio.Event()
        self._replicas = itertools.cycle(system.stack.config.instances("orders"))

    def __enter__(self) -> "BalancedOrderStream":
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()

    async def placed_at_least(self, count: int) -> bool:
        if self._task.done():
            self._task.result()  # a stream that failed says why
        return len(self.accepted) >= count

    async def stop(self) -> list[str]:
        """Stop after the order in flight is placed; every order accepted."""
        self._stopping.set()
        await self._task
        return self.accepted

    async def _run(self) -> None:
        key = str(uuid.uuid4())
        while True:
            order_id = await self._place_once(next(self._replicas), key)
            if order_id is None:
                await asyncio.sleep(0.05)  # no replica answered: the same order, on the next
                continue
            self.accepted.append(order_id)
            key = str(uuid.uuid4())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.pace)
            if self._stopping.is_set():
                return

    async def _place_once(self, replica: str, key: str) -> str | None:
        try:
            response = await self.system.http[replica].post(
                "/orders", json=order_body(self.sku), headers={"Idempotency-Key": key}
            )
        except httpx.TransportError:
            return None
        if response.status_code == 503:  # draining on SIGTERM
            return None
        assert response.status_code == 202, response.text
        return response.json()["order_id"]


def order_body(sku: str) -> dict:
    return {
        "customer_email": "ada@example.com",
        "items": [{"sku": sku, "quantity": 1, "unit_price": "2.50"}],
        "shipping_address": {
            "name": "Ada", "line1": "1 Main St", "city": "Paris",
            "postal_code": "75001", "country": "FR",
        },
    }  # fmt: skip


async def stocked_sku(system, prefix: str) -> str:
    sku = f"{prefix}-{uuid.uuid4().hex[:6]}"
    stocked = await system.inventory.put(f"/stock/{sku}", json={"available": 1000})
    assert stocked.status_code == 200, stocked.text
    return sku


async def processed(system, instance: str) -> int:
    return (await system.readiness(instance))["messages"]["processed"]


async def every_order_shipped_once(system, orders: list[str]) -> None:
    """Each order shipped, with one reservation, one shipment dispatched once, each email
    kind recorded once and sent under one Message-ID; then the audit is clean."""
    for order_id in orders:
        outcome = await eventually(lambda: system.settled(order_id, "shipped"), timeout=90)
        timeline = [step["status"] for step in outcome["order"]["timeline"]]
        assert timeline == ["pending", "confirmed", "shipped"], outcome
        assert outcome["reservation"] == "fulfilled", outcome
        [shipment] = outcome["shipments"]
        assert shipment["status"] == "dispatched", outcome
        kinds = outcome["email_kinds"]
        assert "shipment_dispatched" in kinds and len(set(kinds)) == len(kinds), outcome
        assert len(set(outcome["mails"])) == len(outcome["emails"]), outcome
    report = await eventually(system.audit_is_clean, timeout=60)
    assert report.orders_checked >= len(orders)


async def test_each_replica_consumes_its_services_queues_and_orders_flow_from_either(
    system,
) -> None:
    def each_work_queue_has_a_consumer_per_replica() -> bool:
        counts = system.rabbitmq.queue_counts()
        consumers = {s: counts[work_queue_name(s)]["consumers"] for s in SERVICE_NAMES}
        assert consumers == dict.fromkeys(SERVICE_NAMES, REPLICAS), consumers
        return True

    await eventually(each_work_queue_has_a_consumer_per_replica, timeout=10)
    instances = system.stack.config.instances()
    before = {instance: await processed(system, instance) for instance in instances}

    sku = await stocked_sku(system, "REPLICAS")
    with BalancedOrderStream(system, sku, pace=0) as stream:
        await eventually(lambda: stream.placed_at_least(24), timeout=30)
        orders = await stream.stop()
    await every_order_shipped_once(system, orders)

    for order_id in orders:  # either replica reads what the other wrote
        for replica in system.stack.config.instances("orders"):
            answer = await system.http[replica].get(f"/orders/{order_id}")
            assert answer.json()["status"] == "shipped"
    idle = [i for i in instances if await processed(system, i) == before[i]]
    assert idle == [], "every replica of every service takes its share"


async def test_each_orders_replica_gets_its_own_availability_answers(system) -> None:
    skus = {await stocked_sku(system, "ASKED"): None for _ in range(3)}
    for number, sku in enumerate(skus):
        await system.inventory.put(f"/stock/{sku}", json={"available": number})

    async def ask(replica: str, sku: str) -> tuple[str, str, int]:
        answer = await system.http[replica].get("/availability", params={"sku": sku})
        assert answer.status_code == 200, answer.text
        return replica, sku, answer.json()["available"]

    asked = [(r, s) for r in system.stack.config.instances("orders") for s in skus] * 5
    answers = await asyncio.gather(*(ask(replica, sku) for replica, sku in asked))
    assert sorted(answers) == sorted(
        (replica, sku, list(skus).index(sku)) for replica, sku in asked
    )


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_a_rolling_restart_under_a_stream_of_orders_loses_nothing(system, service) -> None:
    sku = await stocked_sku(system, f"ROLL-{service}")
    with BalancedOrderStream(system, sku) as stream:
        for instance in system.stack.config.instances(service):
            placed_before = len(stream.accepted)
            await eventually(lambda: stream.placed_at_least(placed_before + 5), timeout=30)
            stopping = asyncio.to_thread(system.stack.stop_service, instance, signal.SIGTERM)
            assert await stopping == 0, f"{instance} drains and exits cleanly on SIGTERM"
            system.stack.start_service(instance)
            await asyncio.to_thread(system.stack.wait_ready, 60, (instance,))
        placed_before = len(stream.accepted)
        await eventually(lambda: stream.placed_at_least(placed_before + 5), timeout=30)
        orders = await stream.stop()

    await every_order_shipped_once(system, orders)
    for order_id in orders:
        mails = system.mails_about(order_id)
        assert len(mails) == len({mail["Message-ID"] for mail in mails}), "no email sent twice"


async def test_one_replica_of_each_service_killed_mid_stream_loses_and_doubles_nothing(
    system,
) -> None:
    sku = await stocked_sku(system, "KILL-ONE")
    victims = [f"{service}-2" for service in SERVICE_NAMES]
    before = {victim: await processed(system, victim) for victim in victims}

    async def victims_are_mid_stream() -> bool:
        return all([await processed(system, v) >= before[v] + 2 for v in victims])

    with BalancedOrderStream(system, sku) as stream:
        await eventually(victims_are_mid_stream, timeout=60, interval=0.05)
        for victim in victims:
            assert system.stack.stop_service(victim, signal.SIGKILL) == -signal.SIGKILL
        survivors_took_over = len(stream.accepted) + 20
        await eventually(lambda: stream.placed_at_least(survivors_took_over), timeout=60)
        orders = await stream.stop()
    await every_order_shipped_once(system, orders)

    for victim in victims:  # back to two of each, so the system stops cleanly
        system.stack.start_service(victim)
    await asyncio.to_thread(system.stack.wait_ready, 60, tuple(victims))
