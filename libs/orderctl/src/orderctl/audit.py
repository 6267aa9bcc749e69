"""The end-to-end audit: did every order go through every service exactly once, and does
what each service holds match where the order's life ended (`EXPECTED`)?

It reads each service's database and queues directly, so it also finds what no single
service can see: a missing or doubled effect, an event stuck in an outbox, a message
waiting in a retry queue or dead-lettered.
"""

import os
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Mapping, Set
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import asyncpg

from servicekit.registry import SERVICE_NAMES
from servicekit.topology import dead_letter_queue_name

from .broker import DEFAULT_AMQP_URL, QueueProbe, connect, service_depths
from .errors import CommandError
from .text import plural, redact

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"

# `emails.kind`, one email of each at most per order (see email_service.domain.emails).
ORDER_CONFIRMATION = "order_confirmation"
ORDER_REJECTION = "order_rejection"
SHIPMENT_DISPATCHED = "shipment_dispatched"
ORDER_CANCELLATION = "order_cancellation"


@dataclass(frozen=True)
class Expected:
    """What the other services hold for an order in one status: the reservation statuses
    and shipment statuses allowed, and the exact set of email kinds sent. None: the order
    is not settled, so only the counts are checked."""

    reservation: Set[str] | None = None
    shipment: Set[str] | None = None
    emails: Set[str] | None = None

    @property
    def settled(self) -> bool:
        return self.reservation is not None


UNSETTLED = Expected()
EXPECTED: Mapping[str, Expected] = {
    # order status: Expected(reservation, shipment, emails)
    "pending": UNSETTLED,
    "confirmed": Expected({"reserved"}, {"ready"}, {ORDER_CONFIRMATION}),
    "rejected": Expected({"rejected"}, {"cancelled"}, {ORDER_REJECTION}),
    "shipped": Expected({"fulfilled"}, {"dispatched"}, {ORDER_CONFIRMATION, SHIPMENT_DISPATCHED}),
    "cancelled": Expected({"released", "rejected"}, {"cancelled"}, {ORDER_CANCELLATION}),
}
"""By `orders.status`. Besides, an order that was ever confirmed (its history says so) got
its confirmation email, whatever came next: a cancelled one then has two emails."""

WHY = {
    ("reservation", "cancelled", "reserved"): "stock never released",
    ("shipment", "confirmed", "dispatched"): "orders has not heard of the dispatch yet",
    ("shipment", "cancelled", "dispatched"): "parcel left after the order was cancelled",
}
"""What a mismatch means, for the ones an operator should read about."""


class ProblemKind(StrEnum):
    """One per check; the value is stable for `--json` consumers."""

    ORDER_PENDING = "order_pending"
    RESERVATION_COUNT = "reservation_count"
    RESERVATION_STATUS = "reservation_status"
    SHIPMENT_COUNT = "shipment_count"
    SHIPMENT_STATUS = "shipment_status"
    EMAILS = "emails"
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
    ProblemKind.ORDER_PENDING: "order is settled, not pending",
    ProblemKind.RESERVATION_COUNT: "one stock reservation per order (at most one while pending)",
    ProblemKind.RESERVATION_STATUS: "reservation status matches order status",
    ProblemKind.SHIPMENT_COUNT: "exactly one shipment per order",
    ProblemKind.SHIPMENT_STATUS: "shipment status matches order status",
    ProblemKind.EMAILS: "emails sent match order status and history, each kind at most once",
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
        ProblemKind.SHIPMENT_STATUS,
        ProblemKind.EMAILS,
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
            for service in SERVICE_NAMES
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
        reservations = await _by_order(db["inventory"], _RESERVATIONS, ids)
        shipments = await _by_order(db["shipping"], _SHIPMENTS, ids)
        emails = await _by_order(db["email"], _EMAILS, ids)
        facts = [
            OrderFacts(id_, status, confirmed, reservations[id_], shipments[id_], emails[id_])
            for id_, (status, confirmed) in orders.items()
        ]
        problems = [problem for order in facts for problem in order_problems(order)]
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
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as exc:
            raise CommandError(
                f"a database lacks a table or column ({exc}): are migrations applied?"
            ) from exc


async def _connect_database(service: str, url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = str(exc) or type(exc).__name__
        raise CommandError(
            f"cannot connect to the {service} database at {redact(url)}: {reason}"
        ) from exc


_ORDERS = """
    SELECT order_id, status, EXISTS (
        SELECT 1 FROM order_history AS h
        WHERE h.order_id = o.order_id AND h.status_after = 'confirmed'
    ) AS was_confirmed
    FROM orders AS o"""


async def _orders(
    conn: asyncpg.Connection, order_id: str | None
) -> dict[uuid.UUID, tuple[str, bool]]:
    """(status, was it ever confirmed) by order id."""
    if order_id is None:
        rows = await conn.fetch(f"{_ORDERS} ORDER BY created_at")
    else:
        try:
            wanted = uuid.UUID(order_id)
        except ValueError as exc:
            raise CommandError(f"{order_id!r} is not an order id (a UUID)") from exc
        rows = await conn.fetch(f"{_ORDERS} WHERE order_id = $1", wanted)
        if not rows:
            raise CommandError(f"order {order_id} not found in the orders database")
    return {row["order_id"]: (row["status"], row["was_confirmed"]) for row in rows}


_RESERVATIONS = "SELECT order_id, status FROM reservations WHERE order_id = ANY($1::uuid[])"
_SHIPMENTS = "SELECT order_id, status FROM shipments WHERE order_id = ANY($1::uuid[])"
_EMAILS = "SELECT order_id, kind FROM emails WHERE order_id = ANY($1::uuid[])"


async def _by_order(
    conn: asyncpg.Connection, query: str, order_ids: list[uuid.UUID]
) -> defaultdict[uuid.UUID, list[str]]:
    """The values of each order's rows, from a query returning (order_id, value)."""
    values: defaultdict[uuid.UUID, list[str]] = defaultdict(list)
    for order_id, value in await conn.fetch(query, order_ids):
        values[order_id].append(value)
    return values


@dataclass(frozen=True)
class OrderFacts:
    """What the four databases hold about one order."""

    order_id: uuid.UUID
    status: str
    was_confirmed: bool
    """Its history has an event that moved it to confirmed."""
    reservations: list[str]
    """The status of each of its reservations."""
    shipments: list[str]
    """The status of each of its shipments."""
    emails: list[str]
    """The kind of each email sent about it."""


def order_problems(order: OrderFacts) -> list[Problem]:
    """An order against `EXPECTED` for its status. A pending order gets the pending problem
    and only the checks that do not depend on its outcome: at most one reservation, exactly
    one shipment (shipping prepares one for every order it hears of), no email twice."""
    expected = EXPECTED.get(order.status, UNSETTLED)
    reservations, shipments = order.reservations, order.shipments
    found: list[tuple[ProblemKind, str]] = []
    if not expected.settled:
        found.append((ProblemKind.ORDER_PENDING, f"order is still {order.status}"))
    if len(reservations) > 1 or (expected.settled and not reservations):
        wanted = "1" if expected.settled else "at most 1"
        count = plural(len(reservations), "reservation")
        found.append((ProblemKind.RESERVATION_COUNT, f"{count}, expected {wanted}"))
    elif expected.reservation is not None and reservations[0] not in expected.reservation:
        detail = _mismatch("reservation", reservations[0], order.status, expected.reservation)
        found.append((ProblemKind.RESERVATION_STATUS, detail))
    if len(shipments) != 1:
        count = plural(len(shipments), "shipment")
        found.append((ProblemKind.SHIPMENT_COUNT, f"{count}, expected 1"))
    elif expected.shipment is not None and shipments[0] not in expected.shipment:
        detail = _mismatch("shipment", shipments[0], order.status, expected.shipment)
        found.append((ProblemKind.SHIPMENT_STATUS, detail))
    emails = expected.emails
    if emails is not None and order.was_confirmed:
        emails = emails | {ORDER_CONFIRMATION}
    if differences := _email_differences(Counter(order.emails), emails):
        found.append((ProblemKind.EMAILS, differences))
    return [Problem(kind, str(order.order_id), detail) for kind, detail in found]


def _mismatch(what: str, status: str, order_status: str, allowed: Set[str]) -> str:
    """E.g. `shipment is dispatched, expected cancelled for a cancelled order: parcel left
    after the order was cancelled`."""
    detail = (
        f"{what} is {status}, expected {' or '.join(sorted(allowed))} for a {order_status} order"
    )
    why = WHY.get((what, order_status, status))
    return f"{detail}: {why}" if why else detail


def _email_differences(sent: Counter[str], expected: Set[str] | None) -> str:
    """The kinds missing and those sent too often, e.g. `missing order_rejection; 2 x
    order_confirmation`; "" when they match. None expected: only each kind at most once."""
    missing = sorted(set(expected or ()) - sent.keys())
    differences = [f"missing {', '.join(missing)}"] if missing else []
    for kind, count in sorted(sent.items()):
        allowed = 1 if expected is None or kind in expected else 0
        if count > allowed:
            differences.append(f"{count} x {kind}" if count > 1 else f"unexpected {kind}")
    return "; ".join(differences)


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
