"""Each service runs as its own PostgreSQL role and RabbitMQ user, provisioned exactly as
`orderctl provision` prints it, and can reach nothing of another service's; and over HTTP,
each answers its operator routes to an operator token only and an order to its own token.

The module provisions the real servers with uniquely named accounts (a virtual host of its
own, `<prefix><service>` users, roles and databases), makes an operator key pair with the
openssl commands the README gives, starts the four services as processes in production mode
with them, and removes everything afterwards.
"""

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest
from aiormq.exceptions import ChannelAccessRefused
from yarl import URL

from devstack import Stack, StackConfig
from orderctl import provision
from servicekit.db import DatabaseUnavailable, ensure_database
from servicekit.registry import SERVICES, ServiceEntry, service
from servicekit.topology import EventsExchangeMissing, ServiceTopology, broker_permissions
from testkit import servers
from testkit.events import SHIPPING_ADDRESS
from testkit.polling import eventually
from testkit.servers import Databases, Infrastructure, Vhost

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose"
ORDERCTL = [sys.executable, "-m", "orderctl", "provision"]
OPENSSL_PATH = {"PATH": "/usr/bin:/bin"}


class Accounts:
    """The module's provisioned names and passwords: `<prefix><service>` everywhere."""

    def __init__(self) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:10]}_"
        self.vhost = f"lp-{self.prefix.rstrip('_')}"
        self.passwords = {
            variable: secrets.token_hex(12)
            for entry in SERVICES
            for variable in (
                provision.postgres_password_variable(entry),
                provision.rabbitmq_password_variable(entry),
            )
        } | {provision.ADMIN_PASSWORD_VARIABLE: secrets.token_hex(12)}
        self.order_token_secret = secrets.token_hex(32)

    def name(self, entry: ServiceEntry) -> str:
        return provision.account_name(entry, self.prefix)

    def database_url(self, infrastructure: Infrastructure, entry: ServiceEntry) -> str:
        server = URL(infrastructure.postgres_url)
        password = self.passwords[provision.postgres_password_variable(entry)]
        return str(server.with_user(self.name(entry)).with_password(password)) + (
            f"/{self.name(entry)}"
        )

    def rabbitmq_url(self, infrastructure: Infrastructure, entry: ServiceEntry) -> str:
        password = self.passwords[provision.rabbitmq_password_variable(entry)]
        broker = URL(infrastructure.vhost_url(self.vhost))
        return str(broker.with_user(self.name(entry)).with_password(password))


@pytest.fixture(scope="module")
def accounts() -> Accounts:
    return Accounts()


def run(command: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    done = subprocess.run(command, input=stdin, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def databases(infrastructure: Infrastructure, accounts: Accounts) -> Iterator[Databases]:
    """Overrides testkit's: each service's role and database, made by the provisioning
    script piped into psql as an operator would; databases and roles dropped afterwards."""
    dbs = Databases(infrastructure.postgres_url, prefix=accounts.prefix)
    script = run([*ORDERCTL, "postgres", "--prefix", accounts.prefix], env={"PATH": ""})
    psql = ["psql", "-X", "-q", f"{infrastructure.postgres_url}/postgres"]
    try:
        run(psql, env={"PATH": "/usr/bin:/bin", **accounts.passwords}, stdin=script)
        yield dbs
    finally:
        dbs.drop_all()
        asyncio.run(drop_roles(infrastructure, accounts))


async def drop_roles(infrastructure: Infrastructure, accounts: Accounts) -> None:
    async with superuser(infrastructure) as admin:
        for entry in SERVICES:
            await admin.execute(f'DROP ROLE IF EXISTS "{accounts.name(entry)}"')


@contextlib.asynccontextmanager
async def superuser(infrastructure: Infrastructure) -> AsyncIterator[asyncpg.Connection]:
    """A connection to `postgres` as the test servers' superuser."""
    conn = await asyncpg.connect(f"{infrastructure.postgres_url}/postgres")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def rabbitmq(
    infrastructure: Infrastructure, accounts: Accounts, tmp_path_factory
) -> Iterator[Vhost]:
    """Overrides testkit's: the virtual host, `events` and the users, from the definitions
    `orderctl provision rabbitmq` prints, imported with rabbitmqctl; the test itself works
    as the server's administrator. All deleted afterwards."""
    printed = run(
        [*ORDERCTL, "rabbitmq", "--vhost", accounts.vhost, "--prefix", accounts.prefix],
        env={"PATH": "", **accounts.passwords},
    )
    users = [user["name"] for user in json.loads(printed)["users"]]
    operator = URL(infrastructure.rabbitmq_url).user or "guest"
    try:
        import_definitions(infrastructure, printed)
        asyncio.run(eventually(lambda: permissions_of(infrastructure, accounts.vhost), timeout=30))
        infrastructure.ctl("set_permissions", "-p", accounts.vhost, operator, ".*", ".*", ".*")
        yield Vhost(accounts.vhost, infrastructure.vhost_url(accounts.vhost), infrastructure)
    finally:
        for user in users:
            with contextlib.suppress(RuntimeError):
                infrastructure.ctl("delete_user", user)
        with contextlib.suppress(RuntimeError):
            infrastructure.ctl("delete_vhost", accounts.vhost)


def import_definitions(infrastructure: Infrastructure, definitions: str) -> None:
    """rabbitmqctl 3.10 reads only a file (no stdin), as the broker's own user: one it may
    read, removed at once (the passwords are this module's throwaway ones)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        file.write(definitions)
        file.flush()
        os.chmod(file.name, 0o644)
        infrastructure.ctl("import_definitions", file.name)


def permissions_of(infrastructure: Infrastructure, vhost: str) -> dict[str, tuple[str, ...]]:
    """Each user's (configure, write, read) in `vhost`; empty while it does not exist."""
    try:
        listed = infrastructure.ctl("list_permissions", "-p", vhost, "--formatter", "json")
    except RuntimeError:
        return {}
    return {p["user"]: (p["configure"], p["write"], p["read"]) for p in json.loads(listed)}


@dataclass(frozen=True)
class OperatorKeys:
    private: Path
    public: Path


@pytest.fixture(scope="module")
def operator_keys(tmp_path_factory) -> OperatorKeys:
    """The operator's key pair, made as the README says: openssl, the private key 0600."""
    directory = tmp_path_factory.mktemp("operator")
    keys = OperatorKeys(directory / "operator.key", directory / "operator.pub")
    genpkey = ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(keys.private)]
    run(["sh", "-c", 'umask 077 && exec "$@"', "sh", *genpkey], env=OPENSSL_PATH)
    pubout = ["openssl", "pkey", "-in", str(keys.private), "-pubout", "-out", str(keys.public)]
    run(pubout, env=OPENSSL_PATH)
    assert keys.private.stat().st_mode & 0o077 == 0
    return keys


@pytest.fixture(scope="module")
def operator_token(operator_keys: OperatorKeys) -> str:
    """A token minted as an operator mints one: `orderctl token --private-key`."""
    token = [sys.executable, "-m", "orderctl", "token", "--ttl", "30m", "--subject", "lp"]
    return run([*token, "--private-key", str(operator_keys.private)], env={"PATH": ""}).strip()


def production_env(entry: ServiceEntry, operator_keys: OperatorKeys, accounts: Accounts) -> dict:
    """What a service needs to start in production besides its accounts: its keys."""
    env = {
        f"{entry.env_prefix}ENVIRONMENT": "production",
        f"{entry.env_prefix}OPERATOR_TOKEN_PUBLIC_KEY": str(operator_keys.public),
    }
    if entry.name == "orders":
        env["ORDERS_ORDER_TOKEN_SECRET"] = accounts.order_token_secret
    return env


@pytest.fixture(scope="module")
def service_env(
    infrastructure: Infrastructure,
    accounts: Accounts,
    operator_keys: OperatorKeys,
    rabbitmq,
    databases,
) -> dict:
    """Overrides the suite's: every service in production mode with its own accounts."""
    env = {}
    for entry in SERVICES:
        env |= production_env(entry, operator_keys, accounts)
        env[f"{entry.env_prefix}DATABASE_URL"] = accounts.database_url(infrastructure, entry)
        env[f"{entry.env_prefix}RABBITMQ_URL"] = accounts.rabbitmq_url(infrastructure, entry)
    return env


@pytest.fixture(scope="module")
def system(system, operator_token: str):
    """Overrides the suite's: the same system, asked as the operator asks it, by its clients
    and by its audit (`RunningSystem.operator_token`)."""
    for client in system.http.values():
        client.headers["Authorization"] = f"Bearer {operator_token}"
    system.operator_token = operator_token
    return system


# What is provisioned


def test_the_compose_files_are_what_orderctl_provision_prints() -> None:
    """compose's Postgres and RabbitMQ start from these: regenerate them with
    `orderctl provision postgres > deploy/compose/postgres/10-provision.sql` and
    `orderctl provision rabbitmq --placeholders > deploy/compose/rabbitmq/definitions.json`."""
    script = run([*ORDERCTL, "postgres"], env={"PATH": ""})
    definitions = run([*ORDERCTL, "rabbitmq", "--placeholders"], env={"PATH": ""})
    assert (COMPOSE / "postgres" / "10-provision.sql").read_text() == script
    assert (COMPOSE / "rabbitmq" / "definitions.json").read_text() == definitions


def test_printing_the_definitions_refuses_a_missing_password() -> None:
    done = subprocess.run(
        [*ORDERCTL, "rabbitmq"], env={"PATH": ""}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "RABBITMQ_ADMIN_PASSWORD is not set" in done.stderr


def test_the_postgres_script_changes_nothing_unless_every_password_is_set(
    infrastructure: Infrastructure,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    script = run([*ORDERCTL, "postgres", "--prefix", prefix], env={"PATH": ""})
    done = subprocess.run(
        ["psql", "-X", "-q", f"{infrastructure.postgres_url}/postgres"],
        input=script,
        env={"PATH": "/usr/bin:/bin", "ORDERS_DB_PASSWORD": "only-this-one"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Not set:  EMAIL_DB_PASSWORD, INVENTORY_DB_PASSWORD, SHIPPING_DB_PASSWORD" in done.stderr
    assert asyncio.run(roles_named(infrastructure, prefix)) == []


async def roles_named(infrastructure: Infrastructure, prefix: str) -> list[str]:
    async with superuser(infrastructure) as admin:
        query = "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)"
        return [row["rolname"] for row in await admin.fetch(query, prefix)]


def test_each_service_user_has_exactly_its_permissions_in_the_vhost(
    rabbitmq: Vhost, accounts: Accounts
) -> None:
    granted = permissions_of(rabbitmq.infrastructure, rabbitmq.name)
    for entry in SERVICES:
        assert granted[accounts.name(entry)] == tuple(broker_permissions(entry.name))


# The services at work under their own accounts


async def test_the_services_run_an_order_through_under_their_own_accounts(
    system,
) -> None:
    """Each declared its topology, consumes and publishes (orders' outbox, inventory's
    reservation), and request-reply works through direct reply-to."""
    assert (await system.inventory.put("/stock/LP-1", json={"available": 5})).status_code == 200
    availability = await system.orders.get("/availability", params={"sku": "LP-1"})
    assert availability.status_code == 200, availability.text
    assert availability.json()["available"] == 5
    order_id = await system.place(("LP-1", 2))
    settled = await eventually(lambda: system.settled(order_id, "confirmed"), timeout=30)
    assert settled["reservation"] == "reserved"
    assert settled["email_kinds"] == ["order_confirmation"]
    await system.audit_is_clean()


async def test_a_service_dead_letters_into_its_own_dlq_under_its_own_account(
    system, rabbitmq: Vhost
) -> None:
    """A malformed order.created goes to every consumer's DLQ: each publishes it to its
    own dead-letter exchange."""
    connection = await aio_pika.connect(rabbitmq.url)  # the operator, as a test
    async with connection:
        channel = await connection.channel()
        events = await channel.get_exchange("events")
        await events.publish(aio_pika.Message(b"{not json"), routing_key="order.created.v2")

    def dead_lettered() -> bool:
        counts = rabbitmq.queue_counts()
        return all(
            counts[f"{name}.dlq"]["messages_ready"] == 1
            for name in ("inventory", "shipping", "email")
        )

    await eventually(dead_lettered, timeout=30)


async def refusal(url: str, action) -> str:
    """What the broker says when `action(channel)` is refused; fails if it is allowed."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused) as refused:
            await action(channel)
    return str(refused.value)


async def consume_orders_work(channel: aio_pika.abc.AbstractChannel) -> None:
    queue = await channel.get_queue("orders.work", ensure=False)
    await queue.consume(ignore)


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """A consumer callback that never runs: the consume is refused."""


async def publish_to_orders_dlx(channel: aio_pika.abc.AbstractChannel) -> None:
    exchange = await channel.get_exchange("orders.dlx", ensure=False)
    await exchange.publish(aio_pika.Message(b"forged"), routing_key="")


async def declare_events(channel: aio_pika.abc.AbstractChannel) -> None:
    await channel.declare_exchange("events", aio_pika.ExchangeType.TOPIC, durable=True)


async def delete_events(channel: aio_pika.abc.AbstractChannel) -> None:
    await channel.exchange_delete("events")


async def declare_an_orders_queue(channel: aio_pika.abc.AbstractChannel) -> None:
    await channel.declare_queue("orders.stolen", durable=True)


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        (consume_orders_work, "queue 'orders.work'"),
        (publish_to_orders_dlx, "exchange 'orders.dlx'"),
        (declare_events, "exchange 'events'"),
        (delete_events, "exchange 'events'"),
        (declare_an_orders_queue, "queue 'orders.stolen'"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
async def test_a_service_user_is_refused_what_is_another_services(
    system, infrastructure: Infrastructure, accounts: Accounts, action, resource
) -> None:
    inventory = accounts.rabbitmq_url(infrastructure, service("inventory"))
    refused = await refusal(inventory, action)
    assert resource in refused and accounts.name(service("inventory")) in refused


async def test_a_restricted_user_finds_the_provisioned_events_exchange_or_says_it_is_missing(
    infrastructure: Infrastructure, accounts: Accounts, rabbitmq: Vhost
) -> None:
    """Where `events` was not provisioned, the topology says so; once the operator declares
    it, the same user's declaration goes through (dev's guest declares it itself)."""
    entry = service("inventory")
    topology = ServiceTopology(entry.name, ("order.created.v2",))
    with servers.vhost(infrastructure) as bare:
        infrastructure.ctl(
            "set_permissions",
            "-p",
            bare.name,
            accounts.name(entry),
            *broker_permissions(entry.name),
        )
        restricted = str(
            URL(accounts.rabbitmq_url(infrastructure, entry)).with_path(f"/{bare.name}")
        )
        connection = await aio_pika.connect(restricted)
        async with connection:
            with pytest.raises(EventsExchangeMissing, match="provision"):
                await topology.declare(await connection.channel())
            operator = await aio_pika.connect(bare.url)
            async with operator:
                await declare_events(await operator.channel())
            await topology.declare(await connection.channel())
        assert "inventory.work" in bare.queue_counts()


# PostgreSQL


async def test_a_service_role_cannot_connect_to_another_services_database(
    system, infrastructure: Infrastructure, accounts: Accounts
) -> None:
    inventory_url = URL(accounts.database_url(infrastructure, service("inventory")))
    orders_database = accounts.name(service("orders"))
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="CONNECT"):
        await asyncpg.connect(str(inventory_url.with_path(f"/{orders_database}")))
    with pytest.raises(DatabaseUnavailable, match="may not connect"):
        await ensure_database(str(inventory_url.with_path(f"/{orders_database}")))


async def test_each_role_owns_its_database_and_the_tables_its_service_migrated(
    system, infrastructure: Infrastructure, accounts: Accounts
) -> None:
    for entry in SERVICES:
        conn = await asyncpg.connect(accounts.database_url(infrastructure, entry))
        try:
            role = await conn.fetchrow(
                "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles"
                " WHERE rolname = current_user"
            )
            owners = {
                r["tableowner"]
                for r in await conn.fetch(
                    "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'"
                )
            }
            migrated = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        finally:
            await conn.close()
        assert tuple(role) == (False, False, False), entry.name
        assert owners == {accounts.name(entry)}, entry.name
        assert migrated > 0, entry.name


async def test_a_role_that_may_not_create_databases_is_told_to_provision_a_missing_one(
    databases: Databases, infrastructure: Infrastructure, accounts: Accounts
) -> None:
    own = URL(accounts.database_url(infrastructure, service("inventory")))
    assert await ensure_database(str(own)) is False  # exists: nothing to create
    with pytest.raises(DatabaseUnavailable, match="may not create it.*orderctl provision"):
        await ensure_database(str(own.with_path(f"/{accounts.prefix}missing")))


def start_alone(
    entry: ServiceEntry, rabbitmq_url: str, postgres_url: str, prefix: str, env: dict, run_dir: Path
) -> tuple[int, str]:
    """Start one service process beside the module's system; its exit code and its log."""
    stack = Stack(
        StackConfig.beside_others(
            rabbitmq_url=rabbitmq_url,
            postgres_url=postgres_url,
            database_prefix=prefix,
            run_dir=run_dir,
            service_env=env,
        )
    )
    stack.start_service(entry.name)
    try:
        code = stack.processes[entry.name].wait(timeout=60)
    finally:
        stack.stop()
    return code, (run_dir / f"{entry.name}.log").read_text()


def test_a_service_in_production_refuses_to_start_as_a_postgres_superuser(
    system, infrastructure: Infrastructure, accounts: Accounts, operator_keys, tmp_path: Path
) -> None:
    entry = service("inventory")
    code, log = start_alone(
        entry,
        accounts.rabbitmq_url(infrastructure, entry),
        infrastructure.postgres_url,  # the superuser
        f"{accounts.prefix}superuser_",
        production_env(entry, operator_keys, accounts),
        tmp_path,
    )
    assert code != 0, log
    assert "refusing to run as the PostgreSQL superuser" in log
    assert "applied migration" not in log and "serving on" not in log, "refused before both"


@pytest.mark.parametrize(
    ("name", "variable"),
    [("inventory", "INVENTORY_OPERATOR_TOKEN_PUBLIC_KEY"), ("orders", "ORDERS_ORDER_TOKEN_SECRET")],
)
def test_a_service_in_production_refuses_to_start_without_its_keys(
    system,
    infrastructure: Infrastructure,
    accounts: Accounts,
    operator_keys,
    tmp_path: Path,
    name: str,
    variable: str,
) -> None:
    entry = service(name)
    env = production_env(entry, operator_keys, accounts)
    del env[variable]
    code, log = start_alone(
        entry,
        accounts.rabbitmq_url(infrastructure, entry),
        accounts.database_url(infrastructure, entry).rsplit("/", 1)[0],
        accounts.prefix,
        env,
        tmp_path,
    )
    assert code != 0, log
    assert f"({variable}) is not set" in log
    assert "applied migration" not in log and "serving on" not in log, "refused before both"


# HTTP: who may call what (the services' routes with servicekit.auth's dependencies)


@contextlib.asynccontextmanager
async def clients(system, token: str | None = None) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """A client per service, with `token` or, as anyone reaching its port, none. The test's
    own: the system's clients keep connections of the event loop of the test that used them."""
    headers = bearer(token) if token else {}
    opened = {
        entry.name: httpx.AsyncClient(base_url=system.stack.url(entry.name), headers=headers)
        for entry in SERVICES
    }
    try:
        yield opened
    finally:
        for client in opened.values():
            await client.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_every_operator_route_answers_an_operator_token_only(
    system, operator_token: str
) -> None:
    """Refused without a token, before anything is written; answered with `orderctl token`'s."""
    nobody = uuid.uuid4()
    routes = [
        # (service, method, path, JSON body, status with the operator token)
        ("inventory", "PUT", "/stock/LP-AUTH", {"available": 3}, 200),
        ("inventory", "GET", "/stock/LP-AUTH", None, 200),
        ("inventory", "GET", f"/reservations/{nobody}", None, 404),
        ("shipping", "GET", "/shipments", None, 200),
        ("shipping", "POST", f"/shipments/{nobody}/dispatch", None, 404),
        ("email", "GET", "/emails", None, 200),
        ("orders", "GET", "/audit/orders", None, 200),
        ("orders", "GET", "/orders", None, 200),
        *((entry.name, "GET", "/audit/outbox", None, 200) for entry in SERVICES),
        *(
            (name, "POST", "/audit/orders", {"order_ids": []}, 200)
            for name in ("inventory", "shipping", "email")
        ),
    ]
    refused, answered = {}, {}
    async with clients(system) as anonymous, clients(system, operator_token) as operator:
        for name, method, path, body, _ in routes:
            without = await anonymous[name].request(method, path, json=body)
            challenge = without.headers.get("WWW-Authenticate")
            refused[name, method, path] = (without.status_code, challenge)
            with_token = await operator[name].request(method, path, json=body)
            answered[name, method, path] = with_token.status_code
        stock = (await operator["inventory"].get("/stock/LP-AUTH")).json()
    assert refused == {(n, m, p): (401, "Bearer") for n, m, p, _, _ in routes}
    assert answered == {(n, m, p): status for n, m, p, _, status in routes}
    assert stock["available"] == 3


async def test_probes_scrapes_and_the_shop_page_stay_open(system, operator_token: str) -> None:
    async with clients(system) as anonymous, clients(system, operator_token) as operator:
        await operator["inventory"].put("/stock/LP-OPEN", json={"available": 1})
        for entry in SERVICES:
            for path in ("/health/live", "/health/ready", "/metrics"):
                response = await anonymous[entry.name].get(path)
                assert response.status_code == 200, (entry.name, path, response.text)
        shop_page = await anonymous["orders"].get("/availability", params={"sku": "LP-OPEN"})
    assert shop_page.json()["available"] == 1


async def placed(customer: httpx.AsyncClient, sku: str, key: str | None = None) -> tuple[str, str]:
    """POST /orders with no token, as a customer: the order id and the token of its 202."""
    body = {
        "customer_email": "ada@example.com",
        "items": [{"sku": sku, "quantity": 1, "unit_price": "2.50"}],
        "shipping_address": SHIPPING_ADDRESS,
    }
    headers = {"Idempotency-Key": key} if key else {}
    response = await customer.post("/orders", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["order_id"], response.json()["access_token"]


async def test_an_order_is_read_and_cancelled_with_its_own_token_only(
    system, operator_token: str
) -> None:
    async with clients(system) as anonymous, clients(system, operator_token) as operator:
        await operator["inventory"].put("/stock/LP-MINE", json={"available": 10})
        customer = anonymous["orders"]
        mine, my_token = await placed(customer, "LP-MINE")
        theirs, their_token = await placed(customer, "LP-MINE")
        read, cancel = f"/orders/{mine}", f"/orders/{mine}/cancel"

        assert (await customer.get(read, headers=bearer(my_token))).json()["order_id"] == mine
        assert (await operator["orders"].get(read)).status_code == 200
        assert (await customer.get(read, headers=bearer(their_token))).status_code == 403
        assert (await customer.get(read)).status_code == 401
        assert (await customer.get(read, headers=bearer(my_token[:-2]))).status_code == 401

        assert (await customer.post(cancel, headers=bearer(their_token))).status_code == 403
        assert (await customer.post(cancel)).status_code == 401
        untouched = (await operator["orders"].get(read)).json()["status"]
        cancelled = await customer.post(cancel, headers=bearer(my_token))
        after = (await operator["orders"].get(read)).json()["status"]
        other = (await operator["orders"].get(f"/orders/{theirs}")).json()["status"]
    assert untouched != "cancelled", "a refused cancel changes nothing"
    assert cancelled.status_code == 200, cancelled.text
    assert (after, other != "cancelled") == ("cancelled", True)


async def test_an_idempotent_replay_carries_a_token_for_the_same_order(system) -> None:
    key = f"lp-{uuid.uuid4()}"
    async with clients(system) as anonymous:
        customer = anonymous["orders"]
        first, _ = await placed(customer, "LP-REPLAY", key)
        again, token = await placed(customer, "LP-REPLAY", key)
        response = await customer.get(f"/orders/{first}", headers=bearer(token))
    assert again == first
    assert response.status_code == 200, response.text


async def first_status(client: httpx.AsyncClient, path: str, **params: str) -> tuple[int, str]:
    """The stream's status code and, if it opened, the `data` of its first event."""
    async with client.stream("GET", path, params=params) as stream:
        if stream.status_code != 200:
            return stream.status_code, ""
        async for line in stream.aiter_lines():
            if line.startswith("data:"):
                return 200, json.loads(line.removeprefix("data:"))["status"]
    return 200, ""


async def test_an_orders_live_status_takes_its_own_token_also_in_the_query_and_nowhere_else(
    system, operator_token: str
) -> None:
    async with clients(system) as anonymous, clients(system, operator_token) as operator:
        await operator["inventory"].put("/stock/LP-LIVE", json={"available": 10})
        customer = anonymous["orders"]
        mine, my_token = await placed(customer, "LP-LIVE")
        _, their_token = await placed(customer, "LP-LIVE")
        events = f"/orders/{mine}/events"

        own = await first_status(customer, events, access_token=my_token)
        theirs = await first_status(customer, events, access_token=their_token)
        none = await first_status(customer, events)
        read_with_query = await customer.get(f"/orders/{mine}", params={"access_token": my_token})
    assert own[0] == 200 and own[1] in ("pending", "confirmed"), own
    assert (theirs[0], none[0]) == (403, 401)
    assert read_with_query.status_code == 401, "only the stream reads a token from the URL"
