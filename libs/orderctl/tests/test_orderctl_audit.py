"""`orderctl audit` against real databases (migrated as the services migrate them) and RabbitMQ."""

import asyncio
import json
import uuid
from dataclasses import dataclass, field, replace

import asyncpg
import pytest
from faststream.rabbit import RabbitBroker
from typer.testing import CliRunner

from email_service.main import MIGRATIONS as EMAIL_MIGRATIONS
from inventory.main import MIGRATIONS as INVENTORY_MIGRATIONS
from orderctl.audit import (
    ORDER_CANCELLATION,
    ORDER_CONFIRMATION,
    ORDER_REJECTION,
    SHIPMENT_DISPATCHED,
    AuditConfig,
    AuditReport,
    OrderFacts,
    Problem,
    ProblemKind,
    audit,
    order_problems,
)
from orderctl.cli import app
from orderctl.errors import CommandError
from orders.main import MIGRATIONS as ORDERS_MIGRATIONS
from servicekit.db import ensure_database, migrate
from servicekit.topology import ServiceTopology, dead_letter_exchange_name, retry_queue_name
from shipping.main import MIGRATIONS as SHIPPING_MIGRATIONS
from testkit.broker import publish_raw

MIGRATIONS = {
    "orders": ORDERS_MIGRATIONS,
    "email": EMAIL_MIGRATIONS,
    "inventory": INVENTORY_MIGRATIONS,
    "shipping": SHIPPING_MIGRATIONS,
}


# order_history rows (event_type, producer, status_after) along an order's paths
CREATED = ("order.created.v2", "orders", "pending")
RESERVED = ("stock.reserved.v1", "inventory", "confirmed")
REJECTED = ("stock.rejected.v1", "inventory", "rejected")
DISPATCHED = ("shipment.dispatched.v1", "shipping", "shipped")
CANCELLED = ("order.cancelled.v1", "orders", "cancelled")
RESERVED_LATE = ("stock.reserved.v1", "inventory", None)  # the order was cancelled already
REJECTED_LATE = ("stock.rejected.v1", "inventory", None)


@dataclass(frozen=True)
class Order:
    """One order as the four databases hold it."""

    status: str
    history: tuple[tuple[str, str, str | None], ...]
    reservation: str | None
    """Its reservation's status; None: no reservation."""
    shipment: str | None
    """Its shipment's status; None: no shipment."""
    emails: tuple[str, ...] = ()
    """The kind of each email sent about it."""


CONFIRMED = Order("confirmed", (CREATED, RESERVED), "reserved", "ready", (ORDER_CONFIRMATION,))
SHIPPED = Order(
    "shipped",
    (CREATED, RESERVED, DISPATCHED),
    "fulfilled",
    "dispatched",
    (ORDER_CONFIRMATION, SHIPMENT_DISPATCHED),
)
CANCELLED_AFTER_CONFIRMATION = Order(
    "cancelled",
    (CREATED, RESERVED, CANCELLED),
    "released",
    "cancelled",
    (ORDER_CONFIRMATION, ORDER_CANCELLATION),
)
CANCELLED_WHILE_PENDING = Order(
    "cancelled", (CREATED, CANCELLED, REJECTED_LATE), "rejected", "cancelled", (ORDER_CANCELLATION,)
)

CLEAN = {
    "pending": Order("pending", (CREATED,), None, "preparing"),
    "confirmed": CONFIRMED,
    "rejected": Order("rejected", (CREATED, REJECTED), "rejected", "cancelled", (ORDER_REJECTION,)),
    "shipped": SHIPPED,
    "cancelled after confirmation": CANCELLED_AFTER_CONFIRMATION,
    "cancelled while pending, stock rejected": CANCELLED_WHILE_PENDING,
    "cancelled while pending, stock released": replace(
        CANCELLED_WHILE_PENDING, history=(CREATED, CANCELLED, RESERVED_LATE), reservation="released"
    ),
}
"""Orders every service handled as they should; the pending one is only not settled yet."""

FAULTY = {
    "dispatched, orders not told": (
        replace(CONFIRMED, shipment="dispatched"),
        ProblemKind.SHIPMENT_STATUS,
        "shipment is dispatched, expected ready for a confirmed order: "
        "orders has not heard of the dispatch yet",
    ),
    "dispatched after cancellation": (
        replace(CANCELLED_AFTER_CONFIRMATION, shipment="dispatched"),
        ProblemKind.SHIPMENT_STATUS,
        "shipment is dispatched, expected cancelled for a cancelled order: "
        "parcel left after the order was cancelled",
    ),
    "rejected, shipment still preparing": (
        Order("rejected", (CREATED, REJECTED), "rejected", "preparing", (ORDER_REJECTION,)),
        ProblemKind.SHIPMENT_STATUS,
        "shipment is preparing, expected cancelled for a rejected order",
    ),
    "stock never released": (
        replace(CANCELLED_AFTER_CONFIRMATION, reservation="reserved"),
        ProblemKind.RESERVATION_STATUS,
        "reservation is reserved, expected rejected or released for a cancelled order: "
        "stock never released",
    ),
    "shipped, stock not fulfilled": (
        replace(SHIPPED, reservation="reserved"),
        ProblemKind.RESERVATION_STATUS,
        "reservation is reserved, expected fulfilled for a shipped order",
    ),
    "rejected but told confirmed": (
        Order("rejected", (CREATED, REJECTED), "rejected", "cancelled", (ORDER_CONFIRMATION,)),
        ProblemKind.EMAILS,
        "missing order_rejection; unexpected order_confirmation",
    ),
    "shipped, no dispatch email": (
        replace(SHIPPED, emails=(ORDER_CONFIRMATION,)),
        ProblemKind.EMAILS,
        "missing shipment_dispatched",
    ),
    "confirmed, then cancelled without confirmation email": (
        replace(CANCELLED_AFTER_CONFIRMATION, emails=(ORDER_CANCELLATION,)),
        ProblemKind.EMAILS,
        "missing order_confirmation",
    ),
    "never confirmed, but confirmation email": (
        replace(CANCELLED_WHILE_PENDING, emails=(ORDER_CONFIRMATION, ORDER_CANCELLATION)),
        ProblemKind.EMAILS,
        "unexpected order_confirmation",
    ),
    "no reservation": (
        replace(CONFIRMED, reservation=None),
        ProblemKind.RESERVATION_COUNT,
        "0 reservations, expected 1",
    ),
    "no shipment": (
        replace(CONFIRMED, shipment=None),
        ProblemKind.SHIPMENT_COUNT,
        "0 shipments, expected 1",
    ),
}
"""Orders with one fault each: the problem the audit must find, and no other."""


@dataclass
class System:
    """Databases and queues filled to look like a system that has run, with known faults."""

    db: dict[str, asyncpg.Connection]
    orders: dict[str, str] = field(default_factory=dict)
    """Order id by what is special about it."""

    async def order(self, name: str, order: Order) -> None:
        order_id = uuid.uuid4()
        self.orders[name] = str(order_id)
        await self.db["orders"].execute(
            """INSERT INTO orders (order_id, customer_name, customer_email, lines, total,
                                   currency, shipping_address, status, correlation_id)
               VALUES ($1, 'Ada', 'ada@example.com', '[]', 4.50, 'EUR', '{}', $2, $3)""",
            order_id,
            order.status,
            uuid.uuid4(),
        )
        await self.db["orders"].executemany(
            """INSERT INTO order_history (event_id, order_id, event_type, producer, occurred_at,
                                          status_after)
               VALUES ($1, $2, $3, $4, now(), $5)""",
            [(uuid.uuid4(), order_id, *event) for event in order.history],
        )
        if order.reservation:
            await self.db["inventory"].execute(
                "INSERT INTO reservations (order_id, status, lines) VALUES ($1, $2, '[]')",
                order_id,
                order.reservation,
            )
        if order.shipment:
            await self.db["shipping"].execute(
                """INSERT INTO shipments (shipment_id, order_id, status, shipping_address, lines)
                   VALUES ($1, $2, $3, '{}', '[]')""",
                uuid.uuid4(),
                order_id,
                order.shipment,
            )
        for kind in order.emails:
            await self.email(order_id, kind)

    async def email(self, order_id: uuid.UUID, kind: str) -> None:
        email_id = uuid.uuid4()
        await self.db["email"].execute(
            """INSERT INTO emails (email_id, order_id, recipient, subject, kind, status, message_id)
               VALUES ($1, $2, 'ada@example.com', 'Your order', $3, 'sent', $4)""",
            email_id,
            order_id,
            kind,
            f"<{email_id}@orderflow>",
        )

    async def outbox_row(self, service: str, *, published: bool) -> None:
        await self.db[service].execute(
            """INSERT INTO outbox (event_id, routing_key, payload, published_at)
               VALUES ($1, 'order.created.v1', '{}', CASE WHEN $2 THEN now() END)""",
            uuid.uuid4(),
            published,
        )


async def prepare_queues(url: str) -> None:
    """Every service's topology; one dead letter for shipping, one email event in retry."""
    broker = RabbitBroker(url)
    await broker.connect()
    try:
        for service in MIGRATIONS:
            await ServiceTopology(service, (), retry_delays=(0.2,)).declare(broker)
    finally:
        await broker.stop()
    await publish_raw(url, "", b"{}", exchange=dead_letter_exchange_name("shipping"))
    await publish_raw(url, retry_queue_name("email", 1), b"{}", exchange="")


async def build_system(config: AuditConfig) -> dict[str, str]:
    db = {}
    for service, url in config.database_urls.items():
        await ensure_database(url)
        await migrate(url, MIGRATIONS[service])
        db[service] = await asyncpg.connect(url)
    system = System(db)
    try:
        for name, order in CLEAN.items():
            await system.order(name, order)
        for name, (order, _, _) in FAULTY.items():
            await system.order(name, order)
        await system.order("pending, no shipment", replace(CLEAN["pending"], shipment=None))
        await system.outbox_row("orders", published=True)
        await system.outbox_row("inventory", published=False)
    finally:
        for conn in db.values():
            await conn.close()
    await prepare_queues(config.amqp_url)
    return system.orders


@pytest.fixture(scope="module")
def config(rabbitmq, databases) -> AuditConfig:
    return AuditConfig.from_env(
        postgres_url=databases.postgres_url,
        database_prefix=databases.prefix,
        amqp_url=rabbitmq.url,
        env={},
    )


@pytest.fixture(scope="module")
def orders(config) -> dict[str, str]:
    return asyncio.run(build_system(config))


SERVICE_PROBLEMS = [
    Problem(ProblemKind.OUTBOX_UNDRAINED, "inventory", "1 event not yet published"),
    Problem(ProblemKind.DEAD_LETTERS, "shipping", "1 message in shipping.dlq"),
    Problem(ProblemKind.MESSAGES_IN_RETRY, "email", "1 in email.retry.1"),
]


def by_kind_and_subject(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.kind, p.subject, p.detail))


async def orderctl(*args: str):
    runner = CliRunner(env={"COLUMNS": "250"})
    return await asyncio.to_thread(runner.invoke, app, list(args))


def order_problems_of(report: AuditReport) -> list[tuple[ProblemKind, str]]:
    return [(p.kind, p.detail) for p in report.problems if p.kind.per_order]


PENDING = (ProblemKind.ORDER_PENDING, "order is still pending")
EXPECTED_PROBLEMS = {
    "pending": [PENDING],
    "pending, no shipment": [PENDING, (ProblemKind.SHIPMENT_COUNT, "0 shipments, expected 1")],
    **{name: [(kind, detail)] for name, (_, kind, detail) in FAULTY.items()},
}
"""Every order problem in the system, by order."""


@pytest.mark.integration
async def test_audit_reports_exactly_the_problems_of_the_system(config, orders) -> None:
    report = await audit(config)

    expected = [
        Problem(kind, orders[name], detail)
        for name, problems in EXPECTED_PROBLEMS.items()
        for kind, detail in problems
    ]
    assert by_kind_and_subject(report.problems) == by_kind_and_subject(expected + SERVICE_PROBLEMS)
    assert (report.orders_checked, report.ok) == (len(CLEAN) + len(FAULTY) + 1, False)
    assert report.services == ("orders", "email", "inventory", "shipping")


@pytest.mark.integration
@pytest.mark.parametrize("name", CLEAN)
async def test_each_status_path_is_clean(config, orders, name: str) -> None:
    report = await audit(config, orders[name])

    assert report.orders_checked == 1
    assert order_problems_of(report) == EXPECTED_PROBLEMS.get(name, [])


@pytest.mark.integration
@pytest.mark.parametrize("name", FAULTY)
async def test_each_fault_is_found_and_nothing_else(config, orders, name: str) -> None:
    _, kind, detail = FAULTY[name]

    report = await audit(config, orders[name])

    assert order_problems_of(report) == [(kind, detail)]


@pytest.mark.integration
async def test_auditing_one_order_checks_it_and_the_whole_plumbing(config, orders) -> None:
    clean = await audit(config, orders["rejected"])
    faulty = await audit(config, orders["no shipment"])

    assert clean.orders_checked == faulty.orders_checked == 1
    assert by_kind_and_subject(clean.problems) == by_kind_and_subject(SERVICE_PROBLEMS)
    assert by_kind_and_subject(faulty.problems) == by_kind_and_subject(
        [
            Problem(ProblemKind.SHIPMENT_COUNT, orders["no shipment"], "0 shipments, expected 1"),
            *SERVICE_PROBLEMS,
        ]
    )


ORDER_ID = uuid.uuid4()


def facts(
    status: str,
    *,
    reservations: list[str],
    shipments: list[str],
    emails: list[str],
) -> OrderFacts:
    return OrderFacts(ORDER_ID, status, False, reservations, shipments, emails)


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (
            facts(
                "rejected",
                reservations=["rejected"],
                shipments=["cancelled"],
                emails=[ORDER_CONFIRMATION, ORDER_CONFIRMATION],
            ),
            [(ProblemKind.EMAILS, "missing order_rejection; 2 x order_confirmation")],
        ),
        (
            facts(
                "confirmed",
                reservations=["reserved"],
                shipments=["ready"],
                emails=[ORDER_CONFIRMATION, ORDER_CONFIRMATION],
            ),
            [(ProblemKind.EMAILS, "2 x order_confirmation")],
        ),
        (
            facts(
                "pending",
                reservations=["reserved", "reserved"],
                shipments=["preparing", "preparing"],
                emails=[ORDER_CONFIRMATION, ORDER_CONFIRMATION, ORDER_REJECTION],
            ),
            [
                PENDING,
                (ProblemKind.RESERVATION_COUNT, "2 reservations, expected at most 1"),
                (ProblemKind.SHIPMENT_COUNT, "2 shipments, expected 1"),
                (ProblemKind.EMAILS, "2 x order_confirmation"),
            ],
        ),
        (
            facts(
                "shipped",
                reservations=["fulfilled"],
                shipments=["dispatched"],
                emails=[SHIPMENT_DISPATCHED, ORDER_CANCELLATION, "newsletter"],
            ),
            [
                (
                    ProblemKind.EMAILS,
                    "missing order_confirmation; unexpected newsletter; "
                    "unexpected order_cancellation",
                )
            ],
        ),
    ],
    ids=["rejected, confirmed twice", "confirmed twice", "pending, all doubled", "odd kinds"],
)
def test_what_the_schemas_forbid_is_still_reported(order: OrderFacts, expected) -> None:
    """Doubles the schemas' keys rule out (reservations.order_id, shipments.order_id,
    emails_once_per_kind), and an email kind no service sends: checked on plain facts."""
    problems = order_problems(order)

    assert [(p.kind, p.detail) for p in problems] == expected
    assert {p.subject for p in problems} == {str(ORDER_ID)}


@pytest.mark.integration
async def test_an_unknown_order_is_an_error(config, orders) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(CommandError, match=f"order {unknown} not found in the orders database"):
        await audit(config, unknown)
    with pytest.raises(CommandError, match="'not-a-uuid' is not an order id"):
        await audit(config, "not-a-uuid")


@pytest.mark.integration
async def test_cli_shows_summary_and_problems_and_exits_1(rabbitmq, databases, orders) -> None:
    connection = ["--postgres-url", databases.postgres_url, "--database-prefix", databases.prefix]
    connection += ["--url", rabbitmq.url]
    total = len(orders)
    problems = sum(map(len, EXPECTED_PROBLEMS.values())) + len(SERVICE_PROBLEMS)

    table = await orderctl("audit", *connection)
    as_json = await orderctl("audit", *connection, "--json")
    one_order = await orderctl("audit", orders["confirmed"], *connection, "--json")
    unknown = await orderctl("audit", str(uuid.uuid4()), *connection)
    usage = await orderctl("audit", "--help")

    assert table.exit_code == 1, table.output
    assert f"Audit of {total} orders, 4 services" in table.stdout
    assert "shipment status matches order status" in table.stdout
    assert "parcel left after the order was cancelled" in table.stdout
    assert f"{orders['no shipment']}" in table.stdout
    report = json.loads(as_json.stdout)
    assert as_json.exit_code == 1
    assert (report["ok"], report["orders_checked"], len(report["problems"])) == (
        False,
        total,
        problems,
    )
    assert report["problem_counts"] == {
        "order_pending": 2,
        "reservation_count": 1,
        "reservation_status": 2,
        "shipment_count": 2,
        "shipment_status": 3,
        "emails": 4,
        "outbox_undrained": 1,
        "queues_missing": 0,
        "dead_letters": 1,
        "messages_in_retry": 1,
    }
    assert json.loads(one_order.stdout)["orders_checked"] == 1
    assert unknown.exit_code == 2
    assert "not found in the orders database" in unknown.stderr
    assert usage.exit_code == 0
    assert "order_confirmation, shipment_dispatched" in usage.stdout
    assert "rejected or released" in usage.stdout


@pytest.mark.integration
async def test_databases_not_yet_migrated_to_the_new_lifecycle_are_an_error(
    rabbitmq, databases, tmp_path
) -> None:
    """The orders database without its 002 migration: no `order_history.status_after`."""
    prefix = f"{databases.prefix}old_"
    (tmp_path / "001_orders.sql").write_text((ORDERS_MIGRATIONS / "001_orders.sql").read_text())
    config = AuditConfig.from_env(
        postgres_url=databases.postgres_url, database_prefix=prefix, amqp_url=rabbitmq.url, env={}
    )
    for service, url in config.database_urls.items():
        await ensure_database(url)
        await migrate(url, tmp_path if service == "orders" else MIGRATIONS[service])

    with pytest.raises(CommandError, match="are migrations applied"):
        await audit(config)


@pytest.mark.integration
async def test_unreachable_database_fails_in_one_line_without_the_password() -> None:
    result = await orderctl("audit", "--postgres-url", "postgresql://postgres:s3cret@127.0.0.1:1")

    assert result.exit_code == 2
    assert result.stderr.startswith(
        "cannot connect to the orders database at postgresql://postgres:***@127.0.0.1:1/orders"
    )
    assert "s3cret" not in result.output
    assert "Traceback" not in result.output


def test_database_urls_follow_the_services_own_settings() -> None:
    env = {
        "POSTGRES_URL": "postgresql://pg.internal:5432/",
        "ORDERFLOW_DATABASE_PREFIX": "staging_",
        "EMAIL_DATABASE_URL": "postgresql://mail-db/email",
        "RABBITMQ_URL": "amqp://mq/",
    }

    from_env = AuditConfig.from_env(env=env)
    explicit = AuditConfig.from_env(postgres_url="postgresql://other", env=env)

    assert from_env.database_urls == {
        "orders": "postgresql://pg.internal:5432/staging_orders",
        "email": "postgresql://mail-db/email",
        "inventory": "postgresql://pg.internal:5432/staging_inventory",
        "shipping": "postgresql://pg.internal:5432/staging_shipping",
    }
    assert from_env.amqp_url == "amqp://mq/"
    assert explicit.database_urls["email"] == "postgresql://other/staging_email"
