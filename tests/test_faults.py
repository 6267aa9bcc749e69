"""Faults on the real system: processes killed, a database and the SMTP server gone, a bug
shipped and fixed, SIGTERM mid-work. Every test ends with `orderctl audit` finding no order
lost and no effect doubled. (RabbitMQ itself stopping is in test_broker_outage.py.)
"""

import asyncio
import signal
from pathlib import Path

import asyncpg
import httpx
import pytest

from servicekit.registry import SERVICES
from testkit.broker import peek_queue
from testkit.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

MAX_ATTEMPTS = 3
SERVICE_ENV = {
    **{f"{s.env_prefix}RETRY_DELAYS": "[0.5, 1, 2]" for s in SERVICES},
    **{f"{s.env_prefix}MAX_ATTEMPTS": str(MAX_ATTEMPTS) for s in SERVICES},
    "EMAIL_SMTP_CIRCUIT_FAILURE_THRESHOLD": "2",
    "EMAIL_SMTP_CIRCUIT_RESET_TIMEOUT": "2",
    "SHIPPING_DISPATCH_DELAY": "3600",  # orders rest at confirmed
}
FAULTY_LAUNCHER = str(Path(__file__).with_name("faulty_service.py"))


class OrderStream:
    """Places orders one after another, riding out an orders service that is restarting."""

    def __init__(self, system, sku: str, count: int) -> None:
        self.system = system
        self.sku = sku
        self.count = count
        self.accepted: list[str] = []

    async def run(self) -> list[str]:
        while len(self.accepted) < self.count:
            try:
                self.accepted.append(await self.system.place((self.sku, 1)))
            except httpx.TransportError:  # down, or killed mid-request: the audit sees all
                await eventually(self._orders_answers, timeout=60)
        return self.accepted

    async def _orders_answers(self) -> bool:
        try:
            return (await self.system.orders.get("/health/live")).status_code == 200
        except httpx.TransportError:
            return False


async def stocked_sku(system, name: str, available: int = 1000) -> str:
    await system.inventory.put(f"/stock/{name}", json={"available": available})
    return name


async def processed(system, service: str) -> int:
    return (await system.readiness(service))["messages"]["processed"]


async def restart(system, service: str, launcher: str | None = None, env=None) -> None:
    system.stack.start_service(service, launcher, env)
    await asyncio.to_thread(system.stack.wait_ready, 60, (service,))


async def every_order_had_one_effect_per_service(system, orders: list[str]) -> None:
    """Each order settled with one reservation, shipment and email; then the audit is clean."""
    for order_id in orders:
        outcome = await eventually(lambda: system.settled(order_id, "confirmed"), timeout=90)
        assert len(outcome["emails"]) == len(outcome["shipments"]) == 1, outcome
        assert len(set(outcome["mails"])) == 1, outcome
    report = await eventually(system.audit_is_clean, timeout=60)
    assert report.orders_checked >= len(orders)


@pytest.mark.parametrize("victim", ["orders", "inventory", "email", "shipping"])
async def test_a_service_killed_mid_stream_catches_up_with_one_effect_per_order(
    system, victim
) -> None:
    sku = await stocked_sku(system, f"KILL-{victim}")
    before = await processed(system, victim)
    stream = OrderStream(system, sku, count=20)
    placing = asyncio.create_task(stream.run())

    async def victim_is_mid_stream() -> bool:
        return await processed(system, victim) >= before + 3

    await eventually(victim_is_mid_stream, timeout=60, interval=0.05)
    assert system.stack.stop_service(victim, signal.SIGKILL) == -signal.SIGKILL
    await restart(system, victim)
    orders = await placing

    await every_order_had_one_effect_per_service(system, orders)
    if victim != "email":  # only a crash between SMTP's accept and the commit can re-send
        for order_id in orders:
            assert len(system.mails_about(order_id)) == 1


async def test_a_database_away_for_a_few_seconds_delays_its_service_and_loses_nothing(
    system,
) -> None:
    sku = await stocked_sku(system, "DB-AWAY")
    database = f"{system.databases.prefix}inventory"
    admin = await asyncpg.connect(f"{system.databases.postgres_url}/postgres")
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
        )
        retried_before = (await system.readiness("inventory"))["messages"]["retried"]
        orders = [await system.place((sku, 1)) for _ in range(5)]

        async def inventory_retries_without_its_database() -> bool:
            readiness = await system.readiness("inventory")
            assert readiness["status_code"] == 503
            assert readiness["checks"]["database"] != "ok"
            return readiness["messages"]["retried"] >= retried_before + 2 * len(orders)

        await eventually(inventory_retries_without_its_database, timeout=30)
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()

    await every_order_had_one_effect_per_service(system, orders)
    assert (await system.readiness("inventory"))["messages"]["dead_lettered"] == 0


async def test_with_smtp_down_the_circuit_opens_and_confirmations_go_out_once_it_is_back(
    system,
) -> None:
    sku = await stocked_sku(system, "SMTP-DOWN")
    assert system.stack.stop_service("smtp-sink") == 0
    try:
        orders = [await system.place((sku, 1)) for _ in range(4)]

        async def circuit_is_open() -> dict:
            readiness = await system.readiness("email")
            assert readiness["circuits"]["smtp"]["state"] == "open", readiness["circuits"]
            return readiness

        readiness = await eventually(circuit_is_open, timeout=30)
        assert readiness["status_code"] == 200  # still consuming: messages wait in retry queues
        assert all(system.mails_about(order_id) == [] for order_id in orders)
    finally:
        system.stack.start_smtp_sink()

    await every_order_had_one_effect_per_service(system, orders)
    for order_id in orders:
        assert len(system.mails_about(order_id)) == 1
    readiness = await system.readiness("email")
    assert readiness["circuits"]["smtp"] == {"state": "closed", "consecutive_failures": 0}
    assert readiness["messages"]["dead_lettered"] == 0


async def test_a_bug_for_one_order_dead_letters_it_and_a_replay_after_the_fix_completes_it(
    system,
) -> None:
    sku = await stocked_sku(system, "BUGGY")
    assert system.stack.stop_service("shipping") == 0
    buggy = await system.place((sku, 1))  # waits in shipping.work for the buggy deploy
    await restart(system, "shipping", FAULTY_LAUNCHER, {"FAULT_BUGGY_ORDER_ID": buggy})
    others = [await system.place((sku, 1)) for _ in range(2)]

    async def dead_lettered() -> list | None:
        letters = await peek_queue(system.rabbitmq.url, "shipping.dlq")
        about_buggy = [m for m in letters if buggy.encode() in m.body]
        return about_buggy if len(about_buggy) == 2 else None

    letters = await eventually(dead_lettered, timeout=60)
    assert {letter.headers["x-original-routing-key"] for letter in letters} == {
        "order.created.v2",
        "order.confirmed.v1",
    }
    for letter in letters:
        assert letter.headers["x-failure-exception"] == "KeyError"
        assert f"injected bug for order {buggy}" in letter.headers["x-failure-reason"]
        assert letter.headers["x-failure-attempts"] == MAX_ATTEMPTS
    for order_id in others:
        await eventually(lambda: system.settled(order_id), timeout=60)
    report = await system.audit()
    assert {(p.kind, p.subject) for p in report.problems} == {
        ("shipment_count", buggy),
        ("dead_letters", "shipping"),
    }

    assert system.stack.stop_service("shipping") == 0
    await restart(system, "shipping")  # the fix is deployed
    assert "shipping.work" in await system.replay_dead_letters("shipping")

    await every_order_had_one_effect_per_service(system, [buggy, *others])


@pytest.mark.parametrize(
    "grace", ["10", "0.5"], ids=["in-flight-handlers-finish", "in-flight-handlers-cancelled"]
)
async def test_sigterm_mid_processing_exits_cleanly_and_loses_nothing(system, grace) -> None:
    sku = await stocked_sku(system, f"SIGTERM-{grace}")
    assert system.stack.stop_service("inventory") == 0
    orders = [await system.place((sku, 1)) for _ in range(6)]
    log = system.stack.config.run_dir / "inventory.log"
    log_start = log.stat().st_size
    await restart(
        system,
        "inventory",
        FAULTY_LAUNCHER,
        # a batch applies its messages in turn: six of a second each fit in a 10 s grace
        {
            "FAULT_HANDLER_DELAY": "1",
            "INVENTORY_GRACEFUL_TIMEOUT": grace,
            "INVENTORY_LOG_LEVEL": "DEBUG",  # each event's received and processed lines
        },
    )

    def handlers_in_flight() -> bool:
        return "order.created.v2) received" in log.read_text()[log_start:]

    await eventually(handlers_in_flight, timeout=30, interval=0.05)
    assert await asyncio.to_thread(system.stack.stop_service, "inventory") == 0
    after_stop = log.read_text()[log_start:]
    await restart(system, "inventory")

    await every_order_had_one_effect_per_service(system, orders)
    finished_in_grace = after_stop.split("shutting down")[1].count("processed")
    if grace == "10":
        assert finished_in_grace > 0, after_stop
    else:
        assert finished_in_grace == 0, after_stop
