"""Apply what concurrent callers submit in batches, one batch at a time.

Each caller awaits the result for its own item. The first caller to find no batch running
starts one; items submitted while it runs wait and form the next, so batches grow with the
load and a lone item waits for nothing.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batches(Generic[Item, Result]):
    """`apply` takes a batch and returns one result per item, in order: a value, or the
    exception that item's caller gets."""

    def __init__(
        self,
        apply: Callable[[Sequence[Item]], Awaitable[Sequence[Result | Exception]]],
        max_size: int,
    ) -> None:
        self._apply = apply
        self._max_size = max_size
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._applying: list[tuple[Item, asyncio.Future[Result]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain(), name="apply-batches")
        try:
            return await future
        except asyncio.CancelledError:
            if self._draining and all(f.done() for _, f in (*self._applying, *self._waiting)):
                self._draining.cancel()  # nobody waits for the batch any more (shutdown)
            raise

    async def _drain(self) -> None:
        try:
            while self._waiting:
                self._applying = batch = self._waiting[: self._max_size]
                del self._waiting[: self._max_size]
                try:
                    results = await self._apply([item for item, _ in batch])
                except BaseException as exc:
                    _settle(batch, [exc] * len(batch))
                    if not isinstance(exc, Exception):
                        raise  # cancelled: the rest are settled below
                else:
                    _settle(batch, results)
        finally:
            self._draining, self._applying = None, []
            if self._waiting:  # cancelled with callers still waiting: they are not applied
                _settle(self._waiting, [asyncio.CancelledError()] * len(self._waiting))
                self._waiting.clear()


async def outcome_of(applying: Awaitable[Result]) -> Result | Exception:
    """What `applying` returns, or the exception it raises: one item's outcome, when a
    batch falls back to applying its items one by one."""
    try:
        return await applying
    except Exception as exc:  # noqa: BLE001 - returned: the item's own outcome
        return exc


def _settle(
    batch: Sequence[tuple[object, asyncio.Future[Result]]],
    results: Sequence[Result | BaseException],
) -> None:
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():  # its caller was cancelled and no longer waits
            continue
        if isinstance(result, asyncio.CancelledError):
            future.cancel()
        elif isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
