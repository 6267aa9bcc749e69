"""Retention: rows kept only as long as they serve a purpose are deleted once older than that.

Every service process runs a `RetentionJob` beside its outbox relay. Each round deletes, for
each `RetentionRule`, the rows older than its age in small batches, each batch a statement
(and so a transaction) of its own that locks only the rows it deletes, and skips rows
another replica's job (or anyone else) holds: replicas share the work without waiting for
each other, and no lock on a hot table outlives a batch. A round repeats batches until one
comes back short.

What is deleted, and why it is safe (README, Retention): published outbox rows (the broker
has them; unpublished rows are never touched), processed event ids older than any
duplicate can arrive (`ServiceSettings._processed_messages_outlive_redeliveries`), and what
a service adds itself (orders: idempotency keys past their retention, which the lookup
ignores already).
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from .settings import ServiceSettings

log = logging.getLogger(__name__)

JITTER = 0.1
"""Each wait is the interval ± this fraction, so replicas started together drift apart."""


@dataclass(frozen=True)
class RetentionRule:
    """Rows of `table` whose `timestamp_column` is older than `age`, and that satisfy
    `condition` (SQL), are deleted. Names and condition come from code, never from input;
    an index on `timestamp_column` (matching `condition`) keeps a batch from scanning."""

    table: str
    timestamp_column: str
    age: timedelta
    condition: str = "true"

    @property
    def delete_batch(self) -> str:
        """The oldest expired rows not locked by anyone, up to `$2` of them, older than `$1`."""
        return f"""
            DELETE FROM {self.table} WHERE ctid IN (
                SELECT ctid FROM {self.table}
                WHERE ({self.condition}) AND {self.timestamp_column} < now() - $1::interval
                ORDER BY {self.timestamp_column} LIMIT $2
                FOR UPDATE SKIP LOCKED)"""


def kit_rules(settings: ServiceSettings) -> list[RetentionRule]:
    """The rules for servicekit's own tables, which every service has."""
    return [
        RetentionRule(
            "outbox", "published_at", settings.outbox_retention, "published_at IS NOT NULL"
        ),
        RetentionRule("processed_messages", "processed_at", settings.processed_message_retention),
    ]


RoundObserver = Callable[[Mapping[str, int], bool], None]
"""Told after each round the rows deleted by table, and whether every rule ran."""


class RetentionJob:
    """Runs a retention round every `interval` until stopped; a failing rule is logged and
    tried again next round."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        rules: Sequence[RetentionRule],
        *,
        interval: timedelta,
        batch_size: int,
        on_round: RoundObserver = lambda deleted, ok: None,
    ) -> None:
        self._pool = pool
        self._rules = rules
        self._interval = interval.total_seconds()
        self._batch_size = batch_size
        self._on_round = on_round
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not await self._stopped_within(
            self._interval * random.uniform(1 - JITTER, 1 + JITTER)
        ):
            await self.run_round()

    def stop(self) -> None:
        """End the loop: at once while it waits, else after the batch in progress."""
        self._stopping.set()

    async def run_round(self) -> dict[str, int]:
        """Delete what every rule says has expired; the rows deleted by table."""
        deleted, ok = {}, True
        for rule in self._rules:
            try:
                deleted[rule.table] = await self.delete_expired(rule)
            except Exception as exc:  # noqa: BLE001 - database away, lock trouble: next round
                ok = False
                log.warning(
                    "retention: %s not cleaned up: %s: %s", rule.table, type(exc).__name__, exc
                )
        if any(deleted.values()):
            log.info(
                "retention: deleted %s",
                ", ".join(f"{count} from {table}" for table, count in deleted.items() if count),
            )
        self._on_round(deleted, ok)
        return deleted

    async def delete_expired(self, rule: RetentionRule) -> int:
        """Delete the rule's expired rows batch by batch until a batch is short; how many."""
        total = 0
        async with self._pool().acquire() as conn:
            while not self._stopping.is_set():
                status = await conn.execute(rule.delete_batch, rule.age, self._batch_size)
                count = int(status.split()[-1])  # "DELETE <n>"
                total += count
                if count < self._batch_size:
                    break
        return total

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()
