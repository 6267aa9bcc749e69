"""The end-to-end audit: did every order go through every service exactly once?

It reads each service's database and queues directly, so it also finds what no single
service can see: a missing or doubled effect, an event stuck in an outbox, a message
waiting in a retry queue or dead-lettered.
"""

import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import asyncpg

from servicekit.topology import dead_letter_queue_name

from .broker import DEFAULT_AMQP_URL, DEFAULT_SERVICES, QueueProbe, connect, service_depths
from .errors import CommandError
from .text import plural, redact

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"
CONFIRMATION_EMAIL = "order_confirmation"
"""`emails.kind` of the one email each order gets (see email_service.domain.messages)."""

EXPECTED_RESERVATION = {"confirmed": "reserved", "rejected": "rejected"}


class ProblemKind(StrEnum):
    """One per check; the value is stable for `--json` consumers."""

    ORDER_PENDING = "order_pending"
    RESERVATION_COUNT = "reservation_count"
    RESERVATION_STATUS = "reservation_status"
    SHIPMENT_COUNT = "shipment_count"
    CONFIRMATION_EMAIL_COUNT = "confirmation_email_count"
    OUTBOX_UNDRAINED = "outbox_undrained"
    QUEUES_MISSING = "queues_missing"
    DEAD_LETTERS = "dead_letters"
    MESSAGES_IN_RETRY = "messages_in_retry"

    @property
    def check(self) -> str:
        """What holds when there is no problem of this kind."""
        return _CHECKS[self]

    @property
    def per_order(self) -> bool:
        return self in _ORDER_KINDS


_CHECKS = {
    ProblemKind.ORDER_PENDING: "order is confirmed or rejected, not pending",
    ProblemKind.RESERVATION_COUNT: "exactly one stock reservation per order",
    ProblemKind.RESERVATION_STATUS: "reservation status matches order status",
    ProblemKind.SHIPMENT_COUNT: "exactly one shipment per order",
    ProblemKind.CONFIRMATION_EMAIL_COUNT: "exactly one confirmation email per order",
    ProblemKind.OUTBOX_UNDRAINED: "every outbox event published",
    ProblemKind.QUEUES_MISSING: "service queues exist on the broker",
    ProblemKind.DEAD_LETTERS: "dead-letter queue empty",
    ProblemKind.MESSAGES_IN_RETRY: "wait and retry queues empty",
}
_ORDER_KINDS = frozenset(
    {
        ProblemKind.ORDER_PENDING,
        ProblemKind.RESERVATION_COUNT,
        ProblemKind.RESERVATION_STATUS,
        ProblemKind.SHIPMENT_COUNT,
        ProblemKind.CONFIRMATION_EMAIL_COUNT,
    }
)


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    subject: str
    """The order id, or the service, the problem is about."""
    detail: str


@dataclass(frozen=True)
class AuditReport:
    orders_checked: int
    services: tuple[str, ...]
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self, kind: ProblemKind) -> int:
        return sum(1 for problem in self.problems if problem.kind is kind)

    def as_dict(self) -> dict[str, Any]:
        counts = Counter(problem.kind.value for problem in self.problems)
        return {
            "ok": self.ok,
            "orders_checked": self.orders_checked,
            "services": list(self.services),
            "problem_counts": {kind.value: counts[kind.value] for kind in ProblemKind},
            "problems": [
                {"kind": p.kind.value, "subject": p.subject, "detail": p.detail}
                for p in self.problems
            ],
        }


@dataclass(frozen=True)
class AuditConfig:
    database_urls: Mapping[str, str]
    """Each service's database URL, by service name."""
    amqp_url: str = DEFAULT_AMQP_URL

    @classmethod
    def from_env(
        cls,
        *,
        postgres_url: str | None = None,
        database_prefix: str | None = None,
        amqp_url: str | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> "AuditConfig":
        """Database URLs as the services find theirs: explicit arguments first, then each
        service's `<SERVICE>_DATABASE_URL`, then `POSTGRES_URL` + `ORDERFLOW_DATABASE_PREFIX`."""
        explicit = postgres_url is not None or database_prefix is not None
        server = (postgres_url or env.get("POSTGRES_URL") or DEFAULT_POSTGRES_URL).rstrip("/")
        if database_prefix is None:
            database_prefix = env.get("ORDERFLOW_DATABASE_PREFIX", "")
        urls = {
            service: (None if explicit else env.get(f"{service.upper()}_DATABASE_URL"))
            or f"{server}/{database_prefix}{service}"
            for service in DEFAULT_SERVICES
        }
        return cls(urls, amqp_url or env.get("RABBITMQ_URL") or DEFAULT_AMQP_URL)


async def audit(config: AuditConfig, order_id: str | None = None) -> AuditReport:
    """Check every order (or only `order_id`), every outbox and every queue of the system.

    Raises CommandError for what prevents the audit itself: a database or the broker
    unreachable, or an `order_id` the orders database does not know.
    """
    async with _databases(config.database_urls) as db:
        orders = await _orders(db["orders"], order_id)
        ids = list(orders)
        reservations = await _reservations(db["inventory"], ids)
        shipments = await _counts(db["shipping"], _SHIPMENTS_BY_ORDER, ids)
        emails = await _counts(db["email"], _EMAILS_BY_ORDER, ids, CONFIRMATION_EMAIL)
        problems = [
            problem
            for order, status in orders.items()
            for problem in _order_problems(
                order, status, reservations.get(order, []), shipments[order], emails[order]
            )
        ]
        for service, conn in db.items():
            problems += await _outbox_problems(service, conn)
    problems += await _queue_problems(config.amqp_url, tuple(config.database_urls))
    return AuditReport(len(orders), tuple(config.database_urls), problems)


@asynccontextmanager
async def _databases(urls: Mapping[str, str]) -> AsyncIterator[dict[str, asyncpg.Connection]]:
    async with AsyncExitStack() as stack:
        connections = {}
        for service, url in urls.items():
            conn = await _connect_database(service, url)
            stack.push_async_callback(conn.close)
            connections[service] = conn
        try:
            yield connections
        except asyncpg.UndefinedTableError as exc:
            raise CommandError(
                f"a database lacks a table ({exc}): are migrations applied?"
            ) from exc


async def _connect_database(service: str, url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = str(exc) or type(exc).__name__
        raise CommandError(
            f"cannot connect to the {service} database at {redact(url)}: {reason}"
        ) from exc


async def _orders(conn: asyncpg.Connection, order_id: str | None) -> dict[uuid.UUID, str]:
    if order_id is None:
        rows = await conn.fetch("SELECT order_id, status FROM orders ORDER BY created_at")
        return {row["order_id"]: row["status"] for row in rows}
    try:
        wanted = uuid.UUID(order_id)
    except ValueError as exc:
        raise CommandError(f"{order_id!r} is not an order id (a UUID)") from exc
    status = await conn.fetchval("SELECT status FROM orders WHERE order_id = $1", wanted)
    if status is None:
        raise CommandError(f"order {order_id} not found in the orders database")
    return {wanted: status}


async def _reservations(
    conn: asyncpg.Connection, order_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    rows = await conn.fetch(
        "SELECT order_id, status FROM reservations WHERE order_id = ANY($1::uuid[])", order_ids
    )
    statuses: dict[uuid.UUID, list[str]] = {}
    for row in rows:
        statuses.setdefault(row["order_id"], []).append(row["status"])
    return statuses


_SHIPMENTS_BY_ORDER = """
    SELECT order_id, count(*) FROM shipments
    WHERE order_id = ANY($1::uuid[]) GROUP BY order_id"""
_EMAILS_BY_ORDER = """
    SELECT order_id, count(*) FROM emails
    WHERE order_id = ANY($1::uuid[]) AND kind = $2 GROUP BY order_id"""


async def _counts(conn: asyncpg.Connection, query: str, *args: Any) -> Counter[uuid.UUID]:
    """Rows per order, from a query returning (order_id, count)."""
    return Counter({order_id: count for order_id, count in await conn.fetch(query, *args)})


def _order_problems(
    order_id: uuid.UUID, status: str, reservations: list[str], shipments: int, emails: int
) -> list[Problem]:
    """A pending order has no expected reservation status yet: it gets the pending problem,
    and the checks that do not depend on its outcome. Shipping prepares a shipment for every
    order it hears of, rejected or not."""
    found: list[tuple[ProblemKind, str]] = []
    if status not in EXPECTED_RESERVATION:
        found.append((ProblemKind.ORDER_PENDING, f"order is still {status}"))
    if len(reservations) != 1:
        count = plural(len(reservations), "reservation")
        found.append((ProblemKind.RESERVATION_COUNT, f"{count}, expected 1"))
    elif status in EXPECTED_RESERVATION and reservations[0] != EXPECTED_RESERVATION[status]:
        detail = f"reservation is {reservations[0]} but the order is {status}"
        found.append((ProblemKind.RESERVATION_STATUS, detail))
    if shipments != 1:
        found.append((ProblemKind.SHIPMENT_COUNT, f"{plural(shipments, 'shipment')}, expected 1"))
    if emails != 1:
        count = plural(emails, "confirmation email")
        found.append((ProblemKind.CONFIRMATION_EMAIL_COUNT, f"{count}, expected 1"))
    return [Problem(kind, str(order_id), detail) for kind, detail in found]


async def _outbox_problems(service: str, conn: asyncpg.Connection) -> list[Problem]:
    pending = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    if not pending:
        return []
    detail = f"{plural(pending, 'event')} not yet published"
    return [Problem(ProblemKind.OUTBOX_UNDRAINED, service, detail)]


async def _queue_problems(amqp_url: str, services: tuple[str, ...]) -> list[Problem]:
    problems = []
    async with connect(amqp_url) as connection:
        probe = QueueProbe(connection)
        for service in services:
            depths = await service_depths(probe, service)
            if depths is None:
                detail = f"no queue {dead_letter_queue_name(service)}: has the service ever run?"
                problems.append(Problem(ProblemKind.QUEUES_MISSING, service, detail))
                continue
            if depths.dead_letters:
                count = plural(depths.dead_letters, "message")
                detail = f"{count} in {dead_letter_queue_name(service)}"
                problems.append(Problem(ProblemKind.DEAD_LETTERS, service, detail))
            if depths.in_retry:
                waiting = ", ".join(f"{n} in {q}" for q, n in depths.retrying.items() if n)
                problems.append(Problem(ProblemKind.MESSAGES_IN_RETRY, service, waiting))
    return problems
