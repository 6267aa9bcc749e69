"""The circuit breaker's states, driven by a dependency that fails on command."""

import asyncio
import time

import pytest

from servicekit.breaker import CircuitBreaker, CircuitOpen
from servicekit.consumer import PermanentFailure, RetryLater
from testkit.polling import eventually

RESET_TIMEOUT = 0.2


class Dependency:
    def __init__(self) -> None:
        self.up = False
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()

    async def call(self) -> None:
        self.calls += 1
        await self.release.wait()
        if not self.up:
            raise ConnectionRefusedError("down")


async def call_through(circuit: CircuitBreaker, dependency: Dependency) -> None:
    async with circuit.guard():
        await dependency.call()


async def open_circuit(circuit: CircuitBreaker, dependency: Dependency) -> float:
    """Fail the dependency until the circuit opens; a time no earlier than the opening."""
    for _ in range(3):
        with pytest.raises(ConnectionRefusedError):
            await call_through(circuit, dependency)
    return time.time()


async def wait_for_probe(opened_by: float) -> None:
    await eventually(lambda: time.time() > opened_by + RESET_TIMEOUT, interval=0.02)


@pytest.fixture
def circuit() -> CircuitBreaker:
    return CircuitBreaker("smtp", failure_threshold=3, reset_timeout=RESET_TIMEOUT)


async def test_it_opens_after_consecutive_failures_and_then_holds_calls_off(circuit) -> None:
    dependency = Dependency()
    await open_circuit(circuit, dependency)
    assert circuit.state == "open"

    with pytest.raises(CircuitOpen) as refused:
        await call_through(circuit, dependency)
    assert isinstance(refused.value, RetryLater)
    assert dependency.calls == 3
    assert 0 < circuit.status()["next_probe_in_seconds"] <= RESET_TIMEOUT


async def test_one_probe_after_the_reset_timeout_closes_it_when_the_dependency_is_back(
    circuit,
) -> None:
    dependency = Dependency()
    await wait_for_probe(await open_circuit(circuit, dependency))
    dependency.up = True
    dependency.release.clear()

    probe = asyncio.create_task(call_through(circuit, dependency))
    await eventually(lambda: dependency.calls == 4 or probe.done(), interval=0.01)
    with pytest.raises(CircuitOpen, match="probe is in flight"):
        await call_through(circuit, dependency)
    dependency.release.set()
    await probe

    assert circuit.status() == {"state": "closed", "consecutive_failures": 0}
    await call_through(circuit, dependency)
    assert dependency.calls == 5


async def test_a_failed_probe_opens_it_again(circuit) -> None:
    dependency = Dependency()
    await wait_for_probe(await open_circuit(circuit, dependency))

    with pytest.raises(ConnectionRefusedError):
        await call_through(circuit, dependency)
    assert circuit.state == "open"
    with pytest.raises(CircuitOpen):
        await call_through(circuit, dependency)


async def test_a_refusal_of_one_message_does_not_count_as_an_outage(circuit) -> None:
    for _ in range(5):
        with pytest.raises(PermanentFailure):
            async with circuit.guard():
                raise PermanentFailure("mailbox does not exist")
    assert circuit.status() == {"state": "closed", "consecutive_failures": 0}
