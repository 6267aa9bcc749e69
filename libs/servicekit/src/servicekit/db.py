"""PostgreSQL: create the service's database, apply its migrations, open its pool."""

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from yarl import URL

from contracts.api import Page

log = logging.getLogger(__name__)

KIT_MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 7_340_001  # pg advisory lock key: one migrator at a time per database


_REFUSED = (asyncpg.InsufficientPrivilegeError, asyncpg.InvalidAuthorizationSpecificationError)
"""The role may not connect to that database (no CONNECT privilege), or does not exist."""


class DatabaseUnavailable(RuntimeError):
    """The service's database is missing and cannot be created, or its role may not be used."""


async def ensure_database(database_url: str) -> bool:
    """Create the database named in the URL if it does not exist; True if it was created.

    The service's own database is tried first: a least-privileged role (production) that
    owns it and may neither create databases nor connect to `postgres` starts as well as
    the superuser of development. Only a database that does not exist is created, through
    the `postgres` database, with the same credentials and TLS options.
    """
    url = URL(database_url)
    name = url.path.lstrip("/")
    try:
        conn = await asyncpg.connect(database_url)
    except asyncpg.InvalidCatalogNameError:
        pass  # it does not exist: create it below
    except _REFUSED as exc:
        raise DatabaseUnavailable(
            f"role {url.user!r} may not connect to database {name!r}: {exc}"
        ) from exc
    else:
        await conn.close()
        return False
    try:
        admin = await asyncpg.connect(str(url.with_path("/postgres").with_query(url.query)))
    except _REFUSED as exc:
        raise DatabaseUnavailable(
            f"database {name!r} does not exist and role {url.user!r} may not connect to "
            f"'postgres' to create it ({exc}): provision it (orderctl provision postgres)"
        ) from exc
    try:
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False  # another replica won the race (which error depends on how close)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise DatabaseUnavailable(
                f"database {name!r} does not exist and role {url.user!r} may not create it "
                f"({exc}): provision it (orderctl provision postgres)"
            ) from exc
        log.info("created database %s", name)
        return True
    finally:
        await admin.close()


async def refuse_superuser(database_url: str) -> None:
    """Raise DatabaseUnavailable if the URL's role is a PostgreSQL superuser: in production
    each service runs as its own role, which owns its database and nothing else."""
    conn = await asyncpg.connect(database_url)
    try:
        role, superuser = await conn.fetchrow(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
        )
    finally:
        await conn.close()
    if superuser:
        raise DatabaseUnavailable(
            f"refusing to run as the PostgreSQL superuser {role!r} in production: connect as "
            "the service's own role (orderctl provision postgres)"
        )


def migration_files(service_migrations: Path) -> list[tuple[str, Path]]:
    """(id, file) in the order they apply: the kit's tables first, then the service's own."""
    kit = [(f"servicekit/{p.name}", p) for p in sorted(KIT_MIGRATIONS.glob("*.sql"))]
    own = [(p.name, p) for p in sorted(service_migrations.glob("*.sql"))]
    return kit + own


async def migrate(database_url: str, service_migrations: Path) -> list[str]:
    """Apply pending migrations, each in its own transaction; return the ids applied."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   id text PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["id"] for r in await conn.fetch("SELECT id FROM schema_migrations")}
        applied = []
        for migration_id, path in migration_files(service_migrations):
            if migration_id in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (id) VALUES ($1)", migration_id)
            log.info("applied migration %s", migration_id)
            applied.append(migration_id)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for json_type in ("json", "jsonb"):
        await conn.set_type_codec(
            json_type, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Reset nothing when a connection returns to the pool: pooled connections never change
    session state (no SET, LISTEN, advisory lock or cursor outlives a use), so asyncpg's
    default reset would run four statements per release for nothing."""


async def create_pool(database_url: str, max_size: int) -> asyncpg.Pool:
    """A pool whose json/jsonb columns read and write Python objects."""
    return await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
    )


async def values_by_order(
    conn: asyncpg.Connection, query: str, order_ids: Sequence[UUID]
) -> dict[UUID, list[Any]]:
    """Each of `order_ids` with its values, from `query`: it takes the ids as `$1` (a
    `uuid[]`) and returns rows of (order_id, value). An order without rows gets []."""
    values: dict[UUID, list[Any]] = {order_id: [] for order_id in order_ids}
    for order_id, value in await conn.fetch(query, list(order_ids)):
        values[order_id].append(value)
    return values


async def page_start(
    conn: asyncpg.Connection, page: Page, sort_key_of: str
) -> tuple[object, object] | None:
    """Where a page of a list ordered by (timestamp, id) starts: the sort key of the item it
    goes on after, `(None, None)` for the first page; None when `page.after` is no item's id.
    `sort_key_of` selects that key of the item whose id is `$1`."""
    if page.after is None:
        return (None, None)
    last = await conn.fetchrow(sort_key_of, page.after)
    return None if last is None else (last[0], last[1])
