"""`orderctl audit` against the four services running as `make run` runs them, asked over
HTTP, and their queues on RabbitMQ.

The states to find are set up by writing to each service's own database, as that service
would have written them; the audit itself only asks the services.
"""

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import asyncpg
import pytest
from typer.testing import CliRunner

from contracts.audit import EmailKind
from devstack import Stack, StackConfig
from orderctl.audit import (
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
from servicekit.registry import SERVICE_NAMES
from servicekit.topology import dead_letter_exchange_name, wait_queue_name
from testkit.broker import publish_raw
from testkit.servers import Databases

ORDER_CONFIRMATION, ORDER_REJECTION = EmailKind.ORDER_CONFIRMATION, EmailKind.ORDER_REJECTION
SHIPMENT_DISPATCHED, ORDER_CANCELLATION = (
    EmailKind.SHIPMENT_DISPATCHED,
    EmailKind.ORDER_CANCELLATION,
)

EMAIL_DELAY = 3600
SERVICE_ENV = {"EMAIL_RETRY_DELAYS": f"[{EMAIL_DELAY}]"}
"""A message put in email's wait queue stays there for as long as the module runs."""


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
    """One order as the four services hold it."""

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
    """The services' databases and queues filled to look like a system that has run, with
    known faults."""

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
        """An event the relay published, or one the broker refused: it waits an hour for
        its next attempt, so the running relay leaves it unpublished."""
        await self.db[service].execute(
            """INSERT INTO outbox (event_id, routing_key, payload, published_at, next_attempt_at)
               VALUES ($1, 'order.created.v1', '{}', CASE WHEN $2 THEN now() END,
                       now() + interval '1 hour')""",
            uuid.uuid4(),
            published,
        )


async def fill_queues(url: str) -> None:
    """One dead letter for shipping, one email event waiting for its retry."""
    await publish_raw(url, "", b"{}", exchange=dead_letter_exchange_name("shipping"))
    await publish_raw(url, wait_queue_name("email", 1, EMAIL_DELAY), b"{}", exchange="")


async def build_system(databases: Databases, amqp_url: str) -> dict[str, str]:
    db = {service: await asyncpg.connect(databases.url(service)) for service in SERVICE_NAMES}
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
    await fill_queues(amqp_url)
    return system.orders


@pytest.fixture(scope="module")
def stack(rabbitmq, databases, tmp_path_factory) -> Iterator[Stack]:
    """The four services as separate processes, as `make run` starts them, on ports of
    their own; each migrates its database as it starts."""
    stack = Stack(
        StackConfig.beside_others(
            rabbitmq_url=rabbitmq.url,
            postgres_url=databases.postgres_url,
            database_prefix=databases.prefix,
            run_dir=tmp_path_factory.mktemp("stack"),
            service_env=SERVICE_ENV,
        )
    )
    stack.start()
    try:
        stack.wait_ready(timeout=60)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def service_urls(stack) -> dict[str, str]:
    return {service: stack.url(service) for service in SERVICE_NAMES}


@pytest.fixture(scope="module")
def config(rabbitmq, service_urls) -> AuditConfig:
    return AuditConfig.from_env(service_urls=service_urls, amqp_url=rabbitmq.url, env={})


@pytest.fixture(scope="module")
def orders(stack, rabbitmq, databases) -> dict[str, str]:
    return asyncio.run(build_system(databases, rabbitmq.url))


SERVICE_PROBLEMS = [
    Problem(ProblemKind.OUTBOX_UNDRAINED, "inventory", "1 event not yet published"),
    Problem(ProblemKind.DEAD_LETTERS, "shipping", "1 message in shipping.dlq"),
    Problem(
        ProblemKind.MESSAGES_IN_RETRY, "email", f"1 in {wait_queue_name('email', 1, EMAIL_DELAY)}"
    ),
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


@pytest.mark.e2e
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


@pytest.mark.e2e
async def test_the_audit_asks_a_page_of_orders_at_a_time_and_checks_every_one(
    config, orders
) -> None:
    by_threes = await audit(replace(config, page_size=3))
    at_once = await audit(config)

    assert by_threes.orders_checked == at_once.orders_checked == len(orders)
    assert by_kind_and_subject(by_threes.problems) == by_kind_and_subject(at_once.problems)


@pytest.mark.e2e
@pytest.mark.parametrize("name", CLEAN)
async def test_each_status_path_is_clean(config, orders, name: str) -> None:
    report = await audit(config, orders[name])

    assert report.orders_checked == 1
    assert order_problems_of(report) == EXPECTED_PROBLEMS.get(name, [])


@pytest.mark.e2e
@pytest.mark.parametrize("name", FAULTY)
async def test_each_fault_is_found_and_nothing_else(config, orders, name: str) -> None:
    _, kind, detail = FAULTY[name]

    report = await audit(config, orders[name])

    assert order_problems_of(report) == [(kind, detail)]


@pytest.mark.e2e
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


@pytest.mark.e2e
async def test_an_unknown_order_is_an_error(config, orders) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(CommandError, match=f"answered 404 .*: order {unknown} not found"):
        await audit(config, unknown)
    with pytest.raises(CommandError, match="'not-a-uuid' is not an order id"):
        await audit(config, "not-a-uuid")


@pytest.mark.e2e
async def test_cli_shows_summary_and_problems_and_exits_1(rabbitmq, service_urls, orders) -> None:
    connection = [f"--service-url={service}={url}" for service, url in service_urls.items()]
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
    assert "not found" in unknown.stderr
    assert usage.exit_code == 0
    assert "order_confirmation, shipment_dispatched" in usage.stdout
    assert "rejected or released" in usage.stdout
    assert "--service-url" in usage.stdout


def elsewhere(service_urls: dict[str, str], service: str, url: str) -> AuditConfig:
    """The system's config, but `service` looked for at `url`."""
    return AuditConfig.from_env(service_urls={**service_urls, service: url}, env={})


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("service", "points_at", "error"),
    [
        (
            "inventory",
            "inventory/v2",
            r"the inventory service at http://127.0.0.1:\d+/v2 answered 404 to POST "
            r"/audit/orders: no such route \(is the service older than its audit API\?\)",
        ),
        (
            "shipping",
            "orders",
            "the shipping service at .* answered 405 to POST /audit/orders: Method Not Allowed",
        ),
        (
            "email",
            "inventory",
            "the email service at .* answered POST /audit/orders with what the audit cannot "
            "read: emails: Field required",
        ),
    ],
    ids=["without the audit routes", "another service's, refusing", "another service's, answering"],
)
async def test_a_service_url_that_is_not_that_service_is_an_error(
    service_urls, orders, service: str, points_at: str, error: str
) -> None:
    """Each a real HTTP answer from a real service, just not the one the audit asked for."""
    target, _, path = points_at.partition("/")
    config = elsewhere(service_urls, service, f"{service_urls[target]}/{path}")

    with pytest.raises(CommandError, match=error):
        await audit(config)


@pytest.mark.e2e
async def test_an_unreachable_service_fails_in_one_line_without_the_password(
    service_urls,
) -> None:
    urls = {**service_urls, "email": "http://ops:s3cret@127.0.0.1:1"}
    options = [f"--service-url={service}={url}" for service, url in urls.items()]

    result = await orderctl("audit", *options)

    assert result.exit_code == 2
    assert result.stderr.startswith("cannot reach the email service at http://ops:***@127.0.0.1:1")
    assert "s3cret" not in result.output
    assert "Traceback" not in result.output


async def test_a_service_url_option_names_a_known_service() -> None:
    unknown = await orderctl("audit", "--service-url", "billing=http://billing")
    no_url = await orderctl("audit", "--service-url", "orders")

    assert unknown.exit_code == no_url.exit_code == 2
    assert "'billing=http://billing': expected SERVICE=URL" in unknown.stderr
    assert "'orders': expected SERVICE=URL, SERVICE one of orders, email" in no_url.stderr


def test_service_urls_come_from_options_then_the_environment_then_the_registry() -> None:
    env = {
        "EMAIL_URL": "http://mail.internal",
        "SHIPPING_URL": "http://shipping.internal:9000/",
        "RABBITMQ_URL": "amqp://mq/",
    }

    from_env = AuditConfig.from_env(env=env)
    explicit = AuditConfig.from_env(service_urls={"email": "http://10.0.0.7:8002"}, env=env)

    assert from_env.service_urls == {
        "orders": "http://127.0.0.1:8001",
        "email": "http://mail.internal",
        "inventory": "http://127.0.0.1:8003",
        "shipping": "http://shipping.internal:9000/",
    }
    assert from_env.amqp_url == "amqp://mq/"
    assert explicit.service_urls["email"] == "http://10.0.0.7:8002"
    assert explicit.service_urls["shipping"] == "http://shipping.internal:9000/"
    with pytest.raises(CommandError, match="unknown service 'billing'; known: orders, email"):
        AuditConfig.from_env(service_urls={"billing": "http://billing"}, env=env)
