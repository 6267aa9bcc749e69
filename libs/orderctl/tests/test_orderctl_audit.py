"""`orderctl audit` against real databases (migrated as the services migrate them) and RabbitMQ."""

import asyncio
import json
import uuid
from dataclasses import dataclass, field

import asyncpg
import pytest
from faststream.rabbit import RabbitBroker
from typer.testing import CliRunner

from email_service.main import MIGRATIONS as EMAIL_MIGRATIONS
from inventory.main import MIGRATIONS as INVENTORY_MIGRATIONS
from orderctl.audit import AuditConfig, Problem, ProblemKind, audit
from orderctl.cli import app
from orderctl.errors import CommandError
from orders.main import MIGRATIONS as ORDERS_MIGRATIONS
from servicekit.db import ensure_database, migrate
from servicekit.testing import publish_raw
from servicekit.topology import ServiceTopology, dead_letter_exchange_name, retry_queue_name
from shipping.main import MIGRATIONS as SHIPPING_MIGRATIONS

MIGRATIONS = {
    "orders": ORDERS_MIGRATIONS,
    "email": EMAIL_MIGRATIONS,
    "inventory": INVENTORY_MIGRATIONS,
    "shipping": SHIPPING_MIGRATIONS,
}


@dataclass
class System:
    """Databases and queues filled to look like a system that has run, with known faults."""

    db: dict[str, asyncpg.Connection]
    orders: dict[str, str] = field(default_factory=dict)
    """Order id by what is special about it."""

    async def order(
        self,
        name: str,
        status: str,
        *,
        reservation: str | None,
        shipments: int,
        emails: int = 1,
    ) -> None:
        order_id = uuid.uuid4()
        self.orders[name] = str(order_id)
        await self.db["orders"].execute(
            """INSERT INTO orders (order_id, customer_email, lines, total, currency,
                                   shipping_address, status, correlation_id)
               VALUES ($1, 'ada@example.com', '[]', 4.50, 'EUR', '{}', $2, $3)""",
            order_id,
            status,
            uuid.uuid4(),
        )
        if reservation:
            await self.db["inventory"].execute(
                "INSERT INTO reservations (order_id, status, lines) VALUES ($1, $2, '[]')",
                order_id,
                reservation,
            )
        for _ in range(shipments):
            await self.db["shipping"].execute(
                """INSERT INTO shipments (shipment_id, order_id, status, shipping_address, lines)
                   VALUES ($1, $2, 'preparing', '{}', '[]')""",
                uuid.uuid4(),
                order_id,
            )
        for kind in ["order_confirmation"] * emails + ["shipping_notice"]:
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
        await system.order("confirmed", "confirmed", reservation="reserved", shipments=1)
        await system.order("rejected", "rejected", reservation="rejected", shipments=1)
        await system.order("two emails", "confirmed", reservation="reserved", shipments=1, emails=2)
        await system.order("no shipment", "confirmed", reservation="reserved", shipments=0)
        await system.order("pending", "pending", reservation=None, shipments=0, emails=0)
        await system.order("mismatched", "rejected", reservation="reserved", shipments=1)
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


@pytest.mark.integration
async def test_audit_reports_exactly_the_problems_of_the_system(config, orders) -> None:
    report = await audit(config)

    expected = [
        Problem(
            ProblemKind.CONFIRMATION_EMAIL_COUNT,
            orders["two emails"],
            "2 confirmation emails, expected 1",
        ),
        Problem(
            ProblemKind.SHIPMENT_COUNT,
            orders["no shipment"],
            "0 shipments, expected 1",
        ),
        Problem(ProblemKind.ORDER_PENDING, orders["pending"], "order is still pending"),
        Problem(ProblemKind.RESERVATION_COUNT, orders["pending"], "0 reservations, expected 1"),
        Problem(ProblemKind.SHIPMENT_COUNT, orders["pending"], "0 shipments, expected 1"),
        Problem(
            ProblemKind.CONFIRMATION_EMAIL_COUNT,
            orders["pending"],
            "0 confirmation emails, expected 1",
        ),
        Problem(
            ProblemKind.RESERVATION_STATUS,
            orders["mismatched"],
            "reservation is reserved but the order is rejected",
        ),
        *SERVICE_PROBLEMS,
    ]
    assert by_kind_and_subject(report.problems) == by_kind_and_subject(expected)
    assert (report.orders_checked, report.ok) == (6, False)
    assert report.services == ("orders", "email", "inventory", "shipping")


@pytest.mark.integration
async def test_auditing_one_order_checks_it_and_the_whole_plumbing(config, orders) -> None:
    clean = await audit(config, orders["rejected"])
    doubled = await audit(config, orders["two emails"])

    assert clean.orders_checked == doubled.orders_checked == 1
    assert by_kind_and_subject(clean.problems) == by_kind_and_subject(SERVICE_PROBLEMS)
    assert [p.kind for p in doubled.problems if p.kind.per_order] == [
        ProblemKind.CONFIRMATION_EMAIL_COUNT
    ]


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

    table = await orderctl("audit", *connection)
    as_json = await orderctl("audit", *connection, "--json")
    one_order = await orderctl("audit", orders["confirmed"], *connection, "--json")
    unknown = await orderctl("audit", str(uuid.uuid4()), *connection)

    assert table.exit_code == 1, table.output
    assert "Audit of 6 orders, 4 services" in table.stdout
    assert "exactly one confirmation email per order" in table.stdout
    assert f"{orders['no shipment']}" in table.stdout
    report = json.loads(as_json.stdout)
    assert as_json.exit_code == 1
    assert (report["ok"], report["orders_checked"], len(report["problems"])) == (False, 6, 10)
    assert report["problem_counts"]["shipment_count"] == 2
    assert json.loads(one_order.stdout)["orders_checked"] == 1
    assert unknown.exit_code == 2
    assert "not found in the orders database" in unknown.stderr


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
