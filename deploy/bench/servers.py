"""The shared servers, as the benchmark uses them: a virtual host of its own on RabbitMQ, and
PostgreSQL's statistics (never a service's rows: its tables' sizes are catalogue figures).

Each run gets a fresh virtual host, so no other stack on the broker (a `make run`, another
benchmark) shares its queues, and databases under a prefix of its own; both are removed
at the end unless the run keeps them.
"""

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import asyncpg

from . import cpu


@dataclass(frozen=True)
class Servers:
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432"
    rabbitmqctl: tuple[str, ...] = ("rabbitmqctl",)
    """How to administer the broker, e.g. `docker exec <container> rabbitmqctl`."""

    @classmethod
    def from_environment(cls) -> "Servers":
        """RABBITMQ_URL, POSTGRES_URL and RABBITMQCTL, as `make run` and the tests read them."""
        default = cls()
        return cls(
            rabbitmq_url=os.environ.get("RABBITMQ_URL", default.rabbitmq_url),
            postgres_url=os.environ.get("POSTGRES_URL", default.postgres_url).rstrip("/"),
            rabbitmqctl=tuple(shlex.split(os.environ.get("RABBITMQCTL", "rabbitmqctl"))),
        )

    def vhost_url(self, vhost: str) -> str:
        return urlsplit(self.rabbitmq_url)._replace(path="/" + quote(vhost, safe="")).geturl()

    def create_vhost(self, vhost: str) -> str:
        """Add the virtual host, let the URL's user use it; its URL."""
        user = urlsplit(self.rabbitmq_url).username or "guest"
        self._ctl("add_vhost", vhost)
        self._ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        return self.vhost_url(vhost)

    def delete_vhost(self, vhost: str) -> None:
        self._ctl("delete_vhost", vhost)

    def _ctl(self, *args: str) -> None:
        done = subprocess.run(
            [*self.rabbitmqctl, *args], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            command = " ".join((*self.rabbitmqctl, *args))
            raise RuntimeError(f"{command} failed: {done.stderr.strip() or done.stdout.strip()}")


@dataclass(frozen=True)
class PostgresFigures:
    """Counters of the PostgreSQL server at one moment."""

    commits: dict[str, int] = field(default_factory=dict)
    """pg_stat_database.xact_commit of each database of the run."""
    wal_bytes: int = 0
    """pg_current_wal_lsn() as a byte position: WAL written by the whole server."""


def lsn_bytes(lsn: str) -> int:
    """A WAL position (`16/B374D848`) as bytes since the start of the WAL."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


async def postgres_figures(conn: asyncpg.Connection, database_prefix: str) -> PostgresFigures:
    rows = await conn.fetch(
        "SELECT datname, xact_commit FROM pg_stat_database WHERE starts_with(datname, $1)",
        database_prefix,
    )
    lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
    return PostgresFigures({row["datname"]: row["xact_commit"] for row in rows}, lsn_bytes(lsn))


async def connections_free(conn: asyncpg.Connection) -> tuple[int, int]:
    """(connections free, max_connections): a shared server may have too few left for a
    system whose pools each grow to `*_DB_POOL_SIZE`."""
    most = int(await conn.fetchval("SHOW max_connections"))
    used = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    )
    return most - used, most


async def backend_pids(conn: asyncpg.Connection, database_prefix: str) -> list[int]:
    """The server processes serving the run's databases, the services' connections."""
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE starts_with(datname, $1)", database_prefix
    )
    return [row["pid"] for row in rows]


async def postmaster_pid(conn: asyncpg.Connection) -> int | None:
    """The PostgreSQL server's main process, the parent of this connection's backend; None
    when the server runs elsewhere (another host, another PID namespace)."""
    backend = cpu.process_stat(await conn.fetchval("SELECT pg_backend_pid()"))
    if backend is None or backend.command != "postgres":
        return None
    parent = cpu.process_stat(backend.parent)
    return parent.pid if parent is not None and parent.command == "postgres" else None


async def run_databases(conn: asyncpg.Connection, database_prefix: str) -> list[str]:
    """The names of the databases named `<database_prefix>...`."""
    names = await conn.fetch(
        "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname",
        database_prefix,
    )
    return [row["datname"] for row in names]


async def drop_databases(conn: asyncpg.Connection, database_prefix: str) -> list[str]:
    """Drop every database named `<database_prefix>...`; their names."""
    names = await run_databases(conn, database_prefix)
    for name in names:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    return names


RETAINED_TABLES = ("outbox", "processed_messages", "idempotency_keys")
"""The tables retention keeps bounded (`servicekit.retention`); idempotency keys are orders'."""


async def table_figures(
    conn: asyncpg.Connection, postgres_url: str, database_prefix: str
) -> dict[str, dict[str, dict[str, int]]]:
    """Each service (its database's name less the prefix) -> each of its RETAINED_TABLES ->
    live and dead rows as PostgreSQL's statistics count them, and bytes on disk with
    indexes and TOAST: a deleted row is dead until a vacuum reclaims its space."""
    figures = {}
    for name in await run_databases(conn, database_prefix):
        database = await asyncpg.connect(f"{postgres_url}/{name}")
        try:
            rows = await database.fetch(
                """SELECT relname, n_live_tup, n_dead_tup, pg_total_relation_size(relid) AS size
                   FROM pg_stat_user_tables WHERE relname = ANY($1) ORDER BY relname""",
                list(RETAINED_TABLES),
            )
        finally:
            await database.close()
        figures[name.removeprefix(database_prefix)] = {
            row["relname"]: {
                "rows": row["n_live_tup"],
                "dead": row["n_dead_tup"],
                "bytes": row["size"],
            }
            for row in rows
        }
    return figures


async def vacuum_retained_tables(
    conn: asyncpg.Connection, postgres_url: str, database_prefix: str
) -> None:
    """VACUUM (plain: writers go on) each run database's RETAINED_TABLES, which makes the
    space of the rows retention deleted reusable: what autovacuum does on a server that
    has it on (the sandbox's runs with autovacuum off)."""
    for name in await run_databases(conn, database_prefix):
        database = await asyncpg.connect(f"{postgres_url}/{name}")
        try:
            present = await database.fetch(
                "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY($1)",
                list(RETAINED_TABLES),
            )
            if present:
                await database.execute(f"VACUUM {', '.join(r['relname'] for r in present)}")
        finally:
            await database.close()


HISTORY_ROWS_PER_ORDER = 2
"""Outbox rows and processed-message records an order leaves in a service, about (orders
writes 2 events and reads 3, email writes 1 and reads 2, ...)."""


async def write_history(postgres_url: str, database_prefix: str, orders: int) -> None:
    """Give each service's outbox and `processed_messages` the rows `orders` earlier orders
    would have left: events published over the last hours, each row inserted then marked
    published as the relay does, so the index of unpublished rows keeps a dead entry for
    each (no vacuum has run), and the event ids it has processed."""
    admin = await asyncpg.connect(f"{postgres_url}/postgres")
    try:
        names = await run_databases(admin, database_prefix)
    finally:
        await admin.close()
    rows = orders * HISTORY_ROWS_PER_ORDER
    for name in names:
        conn = await asyncpg.connect(f"{postgres_url}/{name}")
        try:
            async with conn.transaction():  # the relay never sees them unpublished
                await conn.execute(
                    """INSERT INTO outbox (event_id, routing_key, payload, created_at,
                                           next_attempt_at)
                       SELECT gen_random_uuid(), 'history.v1', '{"history": true}',
                              now() - interval '6 hours' + n * interval '1 ms',
                              now() - interval '6 hours' + n * interval '1 ms'
                       FROM generate_series(1, $1) AS n""",
                    rows,
                )
                await conn.execute(
                    "UPDATE outbox SET published_at = next_attempt_at WHERE published_at IS NULL"
                    " AND routing_key = 'history.v1'"
                )
                await conn.execute(
                    """INSERT INTO processed_messages (event_id, event_type)
                       SELECT gen_random_uuid(), 'history.v1' FROM generate_series(1, $1)""",
                    rows,
                )
        finally:
            await conn.close()
