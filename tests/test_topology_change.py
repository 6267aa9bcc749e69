"""A service redeployed with other retry delays while orders flow and a failed message waits
under the old delays: on the real system. Nothing is lost or done twice, and the audit is
clean."""

import asyncio
import json
from pathlib import Path

import pytest

from servicekit.registry import SERVICES
from testkit.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

OLD_DELAYS = "[0.5, 1, 20]"
NEW_DELAYS = "[0.3, 0.6]"
SERVICE_ENV = {
    **{f"{s.env_prefix}RETRY_DELAYS": OLD_DELAYS for s in SERVICES},
    **{f"{s.env_prefix}MAX_ATTEMPTS": "6" for s in SERVICES},
    "SHIPPING_DISPATCH_DELAY": "3600",  # orders rest at confirmed
}
FAULTY_LAUNCHER = str(Path(__file__).with_name("faulty_service.py"))


def queue_depths(system) -> dict[str, int]:
    """Messages (ready and unacknowledged) in each queue of the system's virtual host."""
    listing = system.rabbitmq.infrastructure.ctl(
        "-q", "list_queues", "-p", system.rabbitmq.name, "name", "messages", "--formatter", "json"
    )  # fmt: skip
    return {queue["name"]: queue["messages"] for queue in json.loads(listing)}


async def restart(system, service: str, launcher: str | None = None, env=None) -> None:
    system.stack.start_service(service, launcher, env)
    await asyncio.to_thread(system.stack.wait_ready, 60, (service,))


async def test_new_retry_delays_while_a_failure_waits_under_the_old_ones_lose_nothing(
    system,
) -> None:
    await system.inventory.put("/stock/DELAYS", json={"available": 1000})
    assert system.stack.stop_service("shipping") == 0
    buggy = await system.place(("DELAYS", 1))  # waits in shipping.work for the buggy deploy
    await restart(system, "shipping", FAULTY_LAUNCHER, {"FAULT_BUGGY_ORDER_ID": buggy})

    # Three failed attempts for each of the order's events: both wait 20 s in tier 3.
    await eventually(lambda: queue_depths(system).get("shipping.wait.3.20s", 0) >= 1, timeout=30)
    placing = asyncio.gather(*(system.place(("DELAYS", 1)) for _ in range(10)))
    assert system.stack.stop_service("shipping") == 0
    await restart(system, "shipping", env={"SHIPPING_RETRY_DELAYS": NEW_DELAYS})  # the fix
    orders = [buggy, *await placing]

    for order_id in orders:
        outcome = await eventually(lambda: system.settled(order_id, "confirmed"), timeout=90)
        assert len(outcome["shipments"]) == 1, outcome
    await eventually(system.audit_is_clean, timeout=60)

    def drained() -> dict[str, int]:
        """An event of the buggy order may still wait out its 20 s once the order is whole."""
        depths = queue_depths(system)
        assert not {n: d for n, d in depths.items() if n.startswith("shipping.") and d}, depths
        return depths

    depths = await eventually(drained, timeout=60)
    assert {"shipping.wait.1.300ms", "shipping.wait.2.600ms"} <= depths.keys()
    assert (await system.readiness("shipping"))["messages"]["dead_lettered"] == 0

    # The operator removes what the old delays left, as the runbook says.
    as_deployed = {"SHIPPING_RETRY_DELAYS": NEW_DELAYS}
    planned = await system.orderctl("topology", "plan", "-s", "shipping", env=as_deployed)
    assert planned.returncode == 1, planned.stdout + planned.stderr
    old_waits = {"shipping.wait.1.500ms", "shipping.wait.2.1s", "shipping.wait.3.20s"}
    assert all(f"delete obsolete wait queue {wait}" in planned.stdout for wait in old_waits)
    applied = await system.orderctl(
        "topology", "apply", "-s", "shipping", "--yes", "--quiet-period", "6",
        env=as_deployed, timeout=180,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stdout + applied.stderr
    clean = await system.orderctl("topology", "plan", "-s", "shipping", env=as_deployed)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert not old_waits & queue_depths(system).keys()
    later = await system.place(("DELAYS", 1))
    outcome = await eventually(lambda: system.settled(later, "confirmed"), timeout=60)
    assert len(outcome["shipments"]) == 1, outcome
