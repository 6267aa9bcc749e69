"""`Batches` on its own: what callers submit while a batch runs forms the next one."""

import asyncio
from collections.abc import Sequence

import pytest

from servicekit.batching import Batches
from testkit.polling import eventually


class Recorder:
    """Applies batches of ints, holding each until released, and records them."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.running = 0
        self.most_at_once = 0
        self.cancelled = False

    async def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.running -= 1
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def until(predicate) -> None:
    await eventually(predicate, timeout=5, interval=0.001)


async def test_items_submitted_while_a_batch_runs_form_the_next_one_at_most_max_size() -> None:
    recorder = Recorder()
    batches = Batches(recorder, max_size=3)
    first = asyncio.create_task(batches.submit(0))
    await until(lambda: recorder.batches == [[0]])
    rest = [asyncio.create_task(batches.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    recorder.release.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)

    assert recorder.batches == [[0], [1, 2, 3], [4, 5]]
    assert recorder.most_at_once == 1
    assert [r if isinstance(r, int) else str(r) for r in results] == [
        0, "odd 1", 20, "odd 3", 40, "odd 5",
    ]  # fmt: skip


async def test_a_batch_nobody_waits_for_any_more_is_cancelled() -> None:
    recorder = Recorder()
    batches = Batches(recorder, max_size=8)
    callers = [asyncio.create_task(batches.submit(i)) for i in range(3)]
    await until(lambda: recorder.running == 1)
    callers[0].cancel()
    await asyncio.sleep(0.01)
    assert not recorder.cancelled, "two callers still wait for it"
    for caller in callers[1:]:
        caller.cancel()
    await until(lambda: recorder.cancelled)
    for caller in callers:
        with pytest.raises(asyncio.CancelledError):
            await caller

    recorder.release.set()
    assert await batches.submit(2) == 20, "a later submit starts a new batch"


async def test_a_failing_batch_fails_each_caller_and_the_next_batch_still_runs() -> None:
    calls = []

    async def apply(items: Sequence[int]) -> list[int | Exception]:
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("batch broke")
        return list(items)

    batches = Batches(apply, max_size=8)
    with pytest.raises(RuntimeError, match="batch broke"):
        await batches.submit(1)
    assert await batches.submit(2) == 2
