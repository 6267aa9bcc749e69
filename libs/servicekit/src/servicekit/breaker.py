"""A circuit breaker around a flaky dependency (purgatory), shaped for message handlers.

While the circuit is open, calls fail at once with `CircuitOpen`, a `RetryLater`: the
consumer sends the message round the backoff queues without spending its attempts, so an
outage neither hammers the dependency nor fills the DLQ. Once the reset timeout has passed,
exactly one call goes through as the probe; its success closes the circuit, its failure
opens it again. Failures that say the dependency is up (`PermanentFailure`) do not count.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from .consumer import PermanentFailure, RetryLater

log = logging.getLogger(__name__)

_STATE_NAMES = {"closed": "closed", "opened": "open", "half-opened": "half-open"}


class CircuitOpen(RetryLater):
    """The dependency failed repeatedly; calls are held off until the next probe."""


class CircuitBreaker:
    def __init__(self, name: str, *, failure_threshold: int, reset_timeout: float) -> None:
        self.name = name
        self.reset_timeout = reset_timeout
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=failure_threshold,
            default_ttl=reset_timeout,
            exclude=[PermanentFailure],
        )
        self._breakers.add_listener(self._log_change)
        self._probe = asyncio.Lock()
        self._context: Any = None

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run the block through the circuit; CircuitOpen instead while it is open."""
        breaker = await self._breakers.get_breaker(self.name)
        self._context = breaker.context
        if breaker.context.state == "closed":
            async with self._through(breaker):
                yield
            return
        if self._probe.locked():
            raise CircuitOpen(f"circuit {self.name} is {self.state}: a probe is in flight")
        async with self._probe, self._through(breaker):
            yield

    @contextlib.asynccontextmanager
    async def _through(self, breaker: Any) -> AsyncIterator[None]:
        try:
            async with breaker:
                yield
        except OpenedState as exc:
            raise CircuitOpen(
                f"circuit {self.name} is open; next probe in {self._seconds_to_probe():.0f}s"
            ) from exc

    @property
    def state(self) -> str:
        if self._context is None:
            return "closed"
        return _STATE_NAMES.get(self._context.state, self._context.state)

    def status(self) -> dict[str, Any]:
        """What readiness shows about this circuit."""
        if self.state == "open":
            return {"state": "open", "next_probe_in_seconds": round(self._seconds_to_probe(), 1)}
        failures = (self._context.failure_count or 0) if self._context else 0
        return {"state": self.state, "consecutive_failures": failures}

    def _seconds_to_probe(self) -> float:
        opened_at = self._context.opened_at if self._context else None
        if opened_at is None:
            return 0.0
        return max(0.0, opened_at + self.reset_timeout - time.time())

    def _log_change(self, circuit: str, event_name: str, event: Any) -> None:
        if event_name == "state_changed":
            state = _STATE_NAMES.get(event.state, event.state)
            level = logging.INFO if state == "closed" else logging.WARNING
            log.log(level, "circuit %s is now %s", circuit, state)
