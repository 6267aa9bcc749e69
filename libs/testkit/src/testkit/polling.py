"""Waiting for something to become true, with a deadline instead of a fixed sleep."""

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T] | T], *, timeout: float = 20.0, interval: float = 0.1
) -> T:
    """Poll `probe` (plain or async) until it returns a truthy value without raising
    AssertionError; return that value.

    On timeout, raise the last AssertionError (or one saying what the last value was).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            failure: AssertionError = AssertionError(f"still {value!r} after {timeout}s")
        except AssertionError as exc:
            failure = exc
        if time.monotonic() > deadline:
            raise failure
        await asyncio.sleep(interval)
