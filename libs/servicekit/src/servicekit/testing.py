"""Pytest plugin: real RabbitMQ and PostgreSQL for every test suite, isolated per test module.

Where the servers come from, in order:
1. RABBITMQ_URL / POSTGRES_URL when set (CI sets them to the servers it runs);
2. testcontainers (rabbitmq:3.10-management, postgres:15) where a Docker engine answers;
3. the local defaults, amqp://guest:guest@127.0.0.1:5672/ and postgresql://postgres@127.0.0.1:5432.

Each test module gets a RabbitMQ virtual host of its own and databases with a prefix of its
own, both removed afterwards, so suites never see each other's queues, messages or rows.
The broker is administered with `rabbitmqctl` (RABBITMQCTL overrides the command, e.g.
`docker exec my-rabbit rabbitmqctl`).
"""

import asyncio
import contextlib
import inspect
import json
import os
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import TYPE_CHECKING, Any, TypeVar

import aio_pika
import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from yarl import URL

if TYPE_CHECKING:
    from contracts import OrderCreatedV1

T = TypeVar("T")

DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"


@dataclass
class Infrastructure:
    rabbitmq_url: str
    postgres_url: str
    rabbitmqctl: list[str]

    def ctl(self, *args: str, timeout: float = 60) -> str:
        result = subprocess.run(
            [*self.rabbitmqctl, *args], capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def vhost_url(self, vhost: str) -> str:
        return str(URL(self.rabbitmq_url).with_path("/" + vhost, encoded=False))

    def queue_depths(self, vhost: str) -> dict[str, int]:
        """Messages in each queue of `vhost`, ready and unacknowledged together."""
        out = self.ctl("-q", "list_queues", "-p", vhost, "name", "messages", "--no-table-headers")
        depths = {}
        for line in out.splitlines():
            name, _, count = line.rpartition("\t")
            if name:
                depths[name] = int(count)
        return depths

    def stop_broker(self) -> None:
        self.ctl("stop_app")

    def start_broker(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup")


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
    return probe.returncode == 0


@contextlib.contextmanager
def _containers() -> Iterator[Infrastructure]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.postgres import PostgresContainer

    rabbit = DockerContainer("rabbitmq:3.10-management").with_exposed_ports(5672)
    postgres = PostgresContainer("postgres:15", driver=None)
    with rabbit, postgres:
        wait_for_logs(rabbit, "Server startup complete", timeout=120)
        host, port = rabbit.get_container_host_ip(), rabbit.get_exposed_port(5672)
        pg = URL(postgres.get_connection_url())
        yield Infrastructure(
            rabbitmq_url=f"amqp://guest:guest@{host}:{port}/",
            postgres_url=str(pg.with_path("")),
            rabbitmqctl=["docker", "exec", rabbit.get_wrapped_container().id, "rabbitmqctl"],
        )


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    ctl = shlex.split(os.environ.get("RABBITMQCTL", "rabbitmqctl"))
    if "RABBITMQ_URL" in os.environ or "POSTGRES_URL" in os.environ or not _docker_available():
        yield Infrastructure(
            rabbitmq_url=os.environ.get("RABBITMQ_URL", DEFAULT_RABBITMQ_URL),
            postgres_url=os.environ.get("POSTGRES_URL", DEFAULT_POSTGRES_URL).rstrip("/"),
            rabbitmqctl=ctl,
        )
    else:
        with _containers() as infra:
            yield infra


@dataclass
class Vhost:
    name: str
    url: str
    infrastructure: Infrastructure

    def queue_depths(self) -> dict[str, int]:
        return self.infrastructure.queue_depths(self.name)

    async def drained(self, *queues: str) -> bool:
        """True when these queues hold no message, ready or unacknowledged."""
        depths = await asyncio.to_thread(self.queue_depths)
        return all(depths.get(queue, 0) == 0 for queue in queues)


@pytest.fixture(scope="module")
def rabbitmq(infrastructure: Infrastructure) -> Iterator[Vhost]:
    """A RabbitMQ virtual host for this test module alone."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    user = URL(infrastructure.rabbitmq_url).user or "guest"
    infrastructure.ctl("add_vhost", name)
    infrastructure.ctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    yield Vhost(name, infrastructure.vhost_url(name), infrastructure)
    with contextlib.suppress(RuntimeError):  # the broker may be down if a test failed midway
        infrastructure.ctl("delete_vhost", name)


@dataclass
class Databases:
    """Creates databases named `<prefix><name>`; drops all of them at the end."""

    postgres_url: str
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}_")

    def url(self, name: str) -> str:
        return f"{self.postgres_url}/{self.prefix}{name}"

    def drop_all(self) -> None:
        async def drop() -> None:
            admin = await asyncpg.connect(f"{self.postgres_url}/postgres")
            try:
                names = await admin.fetch(
                    "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", self.prefix
                )
                for row in names:
                    await admin.execute(f'DROP DATABASE "{row["datname"]}" WITH (FORCE)')
            finally:
                await admin.close()

        asyncio.run(drop())


@pytest.fixture(scope="module")
def databases(infrastructure: Infrastructure) -> Iterator[Databases]:
    """Database URLs for this test module alone; the services create the databases."""
    dbs = Databases(infrastructure.postgres_url)
    yield dbs
    dbs.drop_all()


class CapturingSmtpHandler:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self._lock:
            self.messages.append(message_from_bytes(envelope.content, policy=default_policy))
        return "250 Message accepted for delivery"

    def about(self, text: str) -> list[EmailMessage]:
        """Messages whose subject or body mentions `text` (e.g. an order id)."""
        with self._lock:
            return [m for m in self.messages if text in m["Subject"] or text in m.as_string()]


@dataclass
class SmtpSink:
    host: str
    port: int
    handler: CapturingSmtpHandler


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def smtp_sink() -> Iterator[SmtpSink]:
    """An in-process SMTP server that keeps what it receives."""
    from aiosmtpd.controller import Controller

    handler = CapturingSmtpHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield SmtpSink("127.0.0.1", controller.port, handler)
    controller.stop()


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


@contextlib.asynccontextmanager
async def running_service(app: FastAPI, name: str) -> AsyncIterator[httpx.AsyncClient]:
    """Run a service app in-process (lifespan, consumers, relay); an HTTP client once ready."""
    async with (
        LifespanManager(app, startup_timeout=30, shutdown_timeout=30),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=f"http://{name}"
        ) as client,
    ):

        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        await eventually(ready, timeout=30)
        yield client


async def publish_raw(
    url: str,
    routing_key: str,
    body: bytes,
    *,
    message_id: str | None = None,
    exchange: str = "events",
    headers: dict[str, Any] | None = None,
) -> None:
    """Publish bytes as any producer could: persistent, mandatory, confirmed."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(
            aio_pika.Message(
                body,
                message_id=message_id or str(uuid.uuid4()),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers=headers,
            ),
            routing_key=routing_key,
            mandatory=True,
        )


@dataclass(frozen=True)
class PeekedMessage:
    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    routing_key: str | None
    persistent: bool


async def peek_queue(url: str, queue: str) -> list[PeekedMessage]:
    """Every message in `queue`, left in place (read unacknowledged, then returned)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue, ensure=False)
        seen = []
        while (message := await source.get(no_ack=False, fail=False)) is not None:
            seen.append(
                PeekedMessage(
                    body=message.body,
                    headers=dict(message.headers or {}),
                    message_id=message.message_id,
                    routing_key=message.routing_key,
                    persistent=message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT,
                )
            )
    return seen


@contextlib.asynccontextmanager
async def tap(
    url: str, *routing_keys: str
) -> AsyncIterator[list[aio_pika.abc.AbstractIncomingMessage]]:
    """Collect what is published on `events` under these routing keys while the block runs."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        for key in routing_keys:
            await queue.bind(exchange, key)
        received: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received.append(message)
            await message.ack()

        await queue.consume(keep)
        yield received


@contextlib.asynccontextmanager
async def service_under_test(
    create_app: Callable[[Any], FastAPI], settings: Any, migrations: Any, name: str
) -> AsyncIterator[httpx.AsyncClient]:
    """Prepare the service's database exactly as `serve` does, then run it in-process."""
    from .cli import prepare_database

    await prepare_database(settings, migrations)
    async with running_service(create_app(settings), name) as client:
        yield client


def order_created_event(
    lines: list[tuple[str, int]] | None = None, *, customer_email: str = "ada@example.com"
) -> "OrderCreatedV1":
    """An `order.created.v1` as the orders service would publish it."""
    from decimal import Decimal

    from contracts import OrderCreatedV1

    priced = [
        {"sku": sku, "quantity": quantity, "unit_price": Decimal("4.50")}
        for sku, quantity in (lines or [("SKU-1", 1)])
    ]
    return OrderCreatedV1(
        order_id=uuid.uuid4(),
        customer_email=customer_email,
        lines=priced,
        total=sum(line["quantity"] * line["unit_price"] for line in priced),
        currency="EUR",
        shipping_address={
            "name": "Ada Lovelace",
            "line1": "12 St James's Square",
            "city": "London",
            "postal_code": "SW1Y 4JH",
            "country": "GB",
        },
        correlation_id=uuid.uuid4(),
        producer="orders",
    )


async def publish_event(url: str, event: Any) -> None:
    await publish_raw(
        url, event.routing_key(), event.model_dump_json().encode(), message_id=str(event.event_id)
    )


async def consumer_saw_duplicates(client: httpx.AsyncClient, count: int) -> dict[str, int] | None:
    """The consumer's counters once it has recognised `count` duplicates, else None."""
    stats = (await client.get("/health/ready")).json()["messages"]
    return stats if stats["duplicates"] >= count else None


def about_order(messages: list, order_id: Any) -> list:
    """The tapped messages about one order (earlier tests' events may still be arriving)."""
    return [m for m in messages if json.loads(m.body).get("order_id") == str(order_id)]


async def fetch(database_url: str, sql: str, *args: Any) -> list:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def handled(database_url: str, event: Any) -> bool:
    """Whether the service has committed the event's effect (or its absence)."""
    found = await fetch(
        database_url, "SELECT 1 FROM processed_messages WHERE event_id = $1", event.event_id
    )
    return bool(found)


async def published_about(database_url: str, order_id: Any) -> list[str]:
    """Routing keys of every event the service wrote to its outbox about the order, in order."""
    rows = await fetch(
        database_url,
        "SELECT routing_key FROM outbox WHERE payload->>'order_id' = $1 ORDER BY id",
        str(order_id),
    )
    return [row["routing_key"] for row in rows]
