"""One benchmark run: a fresh system, the load, the readings, the system stopped and removed.

The system is started exactly as `make run` starts it (devstack's `Stack`), on free ports,
in a RabbitMQ virtual host and databases of its own, with the services of `Options.tree`.
"""

import asyncio
import contextlib
import math
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import aio_pika
import asyncpg
import httpx

from devstack import ROOT, Stack, StackConfig, service_of
from orderctl.broker import QueueProbe, service_depths
from orderctl.management import ManagementApi, default_management_url, management_api
from servicekit.registry import SERVICE_NAMES, SERVICES

from . import cpu, report
from .load import Load, Streams, order_sender, stock
from .observe import THROUGH, Tap
from .servers import (
    Servers,
    backend_pids,
    connections_free,
    drop_databases,
    postgres_figures,
    postmaster_pid,
    table_figures,
    vacuum_retained_tables,
    write_history,
)

CONNECTIONS_PER_POOL = 16
"""The load generator's HTTP connections to one orders replica are spread over clients of at
most this many: httpx's pool looks at every one of its connections for each request, so
one pool of 200 took the load generator more CPU per order than a service."""


@dataclass
class Options:
    orders: int = 1500
    concurrency: int = 16
    rate: float | None = None
    """Orders a second in an open loop; None: a closed loop of `orders` at `concurrency`."""
    duration: float = 30.0
    skus: int = 1
    through: str = "completed"
    dispatch_delay: float | None = None
    """SHIPPING_DISPATCH_DELAY; None: 0 s through shipped, else 3600 s (nothing ships)."""
    idempotency_keys: bool = False
    max_connections: int = 200
    """HTTP connections the open loop may hold; more requests wait (and their wait counts)."""
    tree: Path = ROOT
    replicas: int = 1
    history: int = 0
    """Earlier orders whose rows the kit's tables hold before the load (see `write_history`)."""
    streams: int = 0
    """Status streams held open during the load, each on an order placed for it before."""
    retention: float | None = None
    """Seconds every retained row is kept (`retention_environment`); None: the defaults."""
    vacuum: float | None = None
    """VACUUM the retained tables this often during the load, as autovacuum would."""
    service_env: dict[str, str] = field(default_factory=dict)
    idle_seconds: float = 2.0
    stall_timeout: float = 60.0
    """Give up waiting when no order has moved for this long."""
    keep: bool = False
    run_root: Path = ROOT / ".run" / "bench"

    @property
    def total_orders(self) -> int:
        return round(self.rate * self.duration) if self.rate else self.orders

    @property
    def shipping_dispatch_delay(self) -> float:
        if self.dispatch_delay is not None:
            return self.dispatch_delay
        return 0.0 if self.through == "shipped" else 3600.0

    def describe(self) -> dict:
        return {
            "mode": "open" if self.rate else "closed",
            "orders": self.total_orders,
            "concurrency": None if self.rate else self.concurrency,
            "rate": self.rate,
            "duration": self.duration if self.rate else None,
            "skus": self.skus,
            "through": self.through,
            "dispatch_delay": self.shipping_dispatch_delay,
            "idempotency_keys": self.idempotency_keys,
            "replicas": self.replicas,
            "history": self.history,
            "streams": self.streams,
            "retention": self.retention,
            "vacuum": self.vacuum,
            "service_env": self.service_env,
        }


def retention_environment(seconds: float) -> dict[str, str]:
    """Every service keeps published outbox rows, processed event ids and idempotency keys
    `seconds`, in retention rounds every quarter of that. Processed ids may be kept that
    short only with a retry chain that fits twice in it and no margin: RETRY_DELAYS becomes
    [seconds / 8], whose span over the default 4 attempts is 3/8 of it."""
    shared = {
        "RETENTION_INTERVAL": f"{seconds / 4:g}",
        "OUTBOX_RETENTION": f"{seconds:g}",
        "PROCESSED_MESSAGE_RETENTION": f"{seconds:g}",
        "PROCESSED_MESSAGE_RETENTION_MARGIN": "0",
        "RETRY_DELAYS": f"[{seconds / 8:g}]",
    }
    environment = {f"{s.env_prefix}{name}": v for s in SERVICES for name, v in shared.items()}
    return environment | {"ORDERS_IDEMPOTENCY_KEY_RETENTION": f"{seconds:g}"}


class Progress:
    """One line, rewritten every second on a terminal (a line every 5 s otherwise)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.width = 0

    def show(self, line: str) -> None:
        if self.terminal:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.terminal and self.width:
            self.stream.write("\n")
            self.stream.flush()

    @property
    def interval(self) -> float:
        return 1.0 if self.terminal else 5.0


def revision(tree: Path) -> dict:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "tree": str(tree),
        "commit": git("rev-parse", "--short=10", "HEAD") or None,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD") or None,
        "subject": git("log", "-1", "--format=%s")[:72],
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


async def run(options: Options, servers: Servers, progress: Progress | None = None) -> dict:
    """Start a system, load it, read its costs, stop and remove it; the figures."""
    tree = options.tree.resolve()
    run_id = uuid.uuid4().hex[:8]
    prefix, vhost = f"bench{run_id}_", f"bench-{run_id}"
    config = StackConfig.beside_others(
        rabbitmq_url=servers.vhost_url(vhost),
        postgres_url=servers.postgres_url,
        database_prefix=prefix,
        run_dir=options.run_root / run_id,
        replicas=options.replicas,
        service_env={
            "SHIPPING_DISPATCH_DELAY": str(options.shipping_dispatch_delay),
            **(retention_environment(options.retention) if options.retention else {}),
            **options.service_env,
        },
    )
    config.services_tree = tree
    stack = Stack(config)
    admin = await asyncpg.connect(f"{servers.postgres_url}/postgres")
    servers.create_vhost(vhost)
    clean = False
    try:
        free, most = await connections_free(admin)
        stack.start()
        try:
            await asyncio.to_thread(stack.wait_ready, 120.0)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n{_last_lines(stack)}") from exc
        if options.history:
            await write_history(servers.postgres_url, prefix, options.history)
        tables_before = await table_figures(admin, servers.postgres_url, prefix)
        async with await aio_pika.connect(config.rabbitmq_url) as broker:
            measured = await _measure(
                options, revision(tree), stack, broker, admin, prefix, progress
            )
        measured.shutdown = await asyncio.to_thread(stack.stop)
        measured.system = {
            "database_prefix": prefix,
            "vhost": vhost,
            "logs": str(config.run_dir),
            "postgresql_connections_free": free,
            "postgresql_max_connections": most,
        }
        # A backend reports its commits when it exits: read them once the services are gone.
        measured.pg_after = await postgres_figures(admin, prefix)
        measured.tables = {
            "before": tables_before,
            "during": measured.table_samples,
            "after": await table_figures(admin, servers.postgres_url, prefix),
        }
        figures = report.figures(measured)
        clean = not report.troubled(figures)
        return figures
    finally:
        await asyncio.to_thread(stack.stop)  # at once if stopped already
        if options.keep:
            print(
                f"kept: databases {prefix}*, virtual host {vhost}, logs in {config.run_dir}",
                file=sys.stderr,
            )
        else:
            await drop_databases(admin, prefix)
            servers.delete_vhost(vhost)
            if clean:
                shutil.rmtree(config.run_dir, ignore_errors=True)
            else:
                print(f"the services' logs are kept in {config.run_dir}", file=sys.stderr)
        await admin.close()


async def _measure(
    options: Options,
    revision: dict,
    stack: Stack,
    broker: aio_pika.abc.AbstractConnection,
    admin: asyncpg.Connection,
    prefix: str,
    progress: Progress | None,
) -> report.Measured:
    tap, load, steps = Tap(), Load(), THROUGH[options.through]
    await tap.start(broker)
    skus = [f"BENCH-{uuid.uuid4().hex[:6]}-{n}" for n in range(options.skus)]
    connections = options.max_connections if options.rate else options.concurrency
    pools = math.ceil(connections / CONNECTIONS_PER_POOL)
    limits = httpx.Limits(max_connections=math.ceil(connections / pools))
    async with contextlib.AsyncExitStack() as clients:
        orders = [
            await clients.enter_async_context(
                httpx.AsyncClient(base_url=stack.url(replica), limits=limits, timeout=30)
            )
            for _ in range(pools)
            for replica in stack.config.instances("orders")
        ]
        inventory = await clients.enter_async_context(
            httpx.AsyncClient(base_url=stack.url("inventory"), timeout=30)
        )
        await stock(inventory, skus, math.ceil(options.total_orders / options.skus))
        mail_watch = asyncio.create_task(tap.watch_mailbox(stack.config.mbox))
        clients.callback(mail_watch.cancel)
        streams = await _open_streams(options, stack, clients, orders, inventory)
        api = await clients.enter_async_context(
            management_api(default_management_url(stack.config.rabbitmq_url))
        )
        await _settle_watched(streams, tap, steps, options.stall_timeout, QueueProbe(broker), api)
        meter = CpuMeter(stack, admin, prefix, await postmaster_pid(admin))
        memory_before = _memory(stack)
        idle = await meter.idle_ms_per_s(options.idle_seconds)
        pg_before, start = await postgres_figures(admin, prefix), await meter.read()
        started = load.clock()
        keys = f"bench-{uuid.uuid4().hex[:8]}" if options.idempotency_keys else None
        send = order_sender(orders, skus, keys)
        if options.rate:
            placing = load.open_loop(send, rate=options.rate, duration=options.duration)
        else:
            placing = load.closed_loop(send, orders=options.orders, concurrency=options.concurrency)
        reporter = asyncio.create_task(_report_progress(progress, load, tap, options, steps))
        table_samples: list[dict] = []
        watcher = asyncio.create_task(
            _watch_tables(options, admin, stack.config.postgres_url, prefix, table_samples)
        )
        try:
            await placing
            await _settle(load, tap, steps, options.stall_timeout)
            depths = await _drain(QueueProbe(broker), api)
        finally:
            reporter.cancel()
            watcher.cancel()
        end, finished = await meter.read(), load.clock()
        cpu_before, cpu_after = meter.spent(start, end)
        memory_after = _memory(stack)
        streamed = {
            "requested": options.streams,
            "opened": streams.opened,
            "open_at_end": streams.open,
            "events": streams.events,
            "failed": dict(streams.failed),
        }
    if progress:
        progress.end()
    return report.Measured(
        revision=revision,
        load=options.describe(),
        steps=steps,
        attempts=load.attempts,
        tap=tap,
        started=started,
        finished=finished,
        cpu_before=cpu_before,
        cpu_after=cpu_after,
        idle_ms_per_s=idle,
        database_prefix=prefix,
        pg_before=pg_before,
        pg_after=pg_before,  # until read again, after the stop
        memory_before=memory_before,
        memory_after=memory_after,
        dead_letters=sum(d.dead_letters for d in depths),
        in_retry=sum(d.in_retry for d in depths),
        streams=streamed,
        table_samples=table_samples,
    )


TABLE_SAMPLE_INTERVAL = 5.0


async def _watch_tables(
    options: Options,
    admin: asyncpg.Connection,
    postgres_url: str,
    prefix: str,
    samples: list[dict],
) -> None:
    """With `--retention` or `--vacuum`: every `--vacuum` seconds (else every 5 s), vacuum the
    retained tables if asked, then append their figures (`table_figures`) to `samples`, with
    the seconds since the load began."""
    if not (options.retention or options.vacuum):
        return
    began = time.monotonic()
    while True:
        await asyncio.sleep(options.vacuum or TABLE_SAMPLE_INTERVAL)
        if options.vacuum:
            await vacuum_retained_tables(admin, postgres_url, prefix)
        figures = await table_figures(admin, postgres_url, prefix)
        samples.append({"at_s": round(time.monotonic() - began, 1), "tables": figures})


async def _open_streams(
    options: Options,
    stack: Stack,
    clients: contextlib.AsyncExitStack,
    orders: list[httpx.AsyncClient],
    inventory: httpx.AsyncClient,
    timeout: float = 60.0,
) -> Streams:
    """Place `options.streams` orders on a SKU of their own and follow each with a status
    stream, from the orders replicas in turn; once every stream has opened (its replica
    listens for the order from then on). They stay open, at confirmed, until the exit stack
    closes: first the streams, then their clients."""
    streams = Streams()
    if not options.streams:
        return streams
    sku = f"BENCH-WATCHED-{uuid.uuid4().hex[:6]}"
    await stock(inventory, [sku], options.streams)
    send = order_sender(orders, [sku])
    placed = await asyncio.gather(*(send(index) for index in range(options.streams)))
    limits = httpx.Limits(max_connections=options.streams)
    watching = [
        await clients.enter_async_context(
            httpx.AsyncClient(
                base_url=stack.url(replica), limits=limits, timeout=httpx.Timeout(30, read=None)
            )
        )
        for replica in stack.config.instances("orders")
    ]
    streams.watched = watched = [o.order_id for o in placed if o.order_id is not None]
    streams.failed.update(str(outcome.status) for outcome in placed if outcome.order_id is None)
    started = [asyncio.Event() for _ in watched]
    held = [
        asyncio.create_task(streams.hold(watching[index % len(watching)], order_id, opened))
        for index, (order_id, opened) in enumerate(zip(watched, started, strict=True))
    ]

    async def close() -> None:
        for stream in held:
            stream.cancel()
        await asyncio.gather(*held, return_exceptions=True)

    clients.push_async_callback(close)
    with contextlib.suppress(TimeoutError):  # the report counts the streams that did not open
        await asyncio.wait_for(asyncio.gather(*(opened.wait() for opened in started)), timeout)
    return streams


Reading = tuple[dict[str, float | None], dict[int, float | None]]
"""CPU seconds of each part of the system, and of each backend serving the run's databases."""


class CpuMeter:
    """Reads the CPU of every part of the system at once. A service is its process, the SMTP
    sink too, PostgreSQL its postmaster (every backend is its child), RabbitMQ its Erlang VM;
    the load generator is this process alone, the host every process on the machine."""

    def __init__(
        self, stack: Stack, admin: asyncpg.Connection, prefix: str, postmaster: int | None
    ) -> None:
        self.roots: dict[str, list[int]] = {}
        for name, process in stack.processes.items():  # a service's replicas count as one
            self.roots.setdefault(service_of(name), []).append(process.pid)
        self.roots["postgresql"] = [postmaster] if postmaster else []
        # The broker's Erlang VM runs `-s rabbit boot`; rabbitmqctl runs a short-lived one too.
        self.roots["rabbitmq"] = cpu.pids_named("beam.smp", argument="rabbit")
        self.admin, self.prefix, self.local_postgres = admin, prefix, postmaster is not None

    async def read(self) -> Reading:
        backends = await backend_pids(self.admin, self.prefix) if self.local_postgres else []
        seconds = cpu.cpu_seconds(self.roots)
        seconds[report.LOAD_GENERATOR] = cpu.own_seconds(os.getpid())
        seconds[report.HOST] = cpu.host_busy_seconds()
        return seconds, {pid: cpu.own_seconds(pid) for pid in backends}

    def spent(self, start: Reading, end: Reading) -> tuple[dict, dict]:
        """Readings (before, after) of each part, the run's backends among them: those alive at
        the end, from what each had spent at the start (nothing, if it connected since)."""
        (before, backends_before), (after, backends_after) = start, end
        if not self.local_postgres:
            return before, after
        live = {pid: seconds for pid, seconds in backends_after.items() if seconds is not None}
        spent_before = sum(backends_before.get(pid) or 0.0 for pid in live)
        return (
            {**before, report.PG_BACKENDS: spent_before},
            {**after, report.PG_BACKENDS: sum(live.values())},
        )

    async def idle_ms_per_s(self, seconds: float) -> dict[str, float | None]:
        """CPU ms a second of each part while the system waits for load: its own timers and
        pollers, and, on the shared servers and the host, whatever else is running."""
        start = await self.read()
        await asyncio.sleep(seconds)
        spent, _ = report.cpu_figures(*self.spent(start, await self.read()), orders=1)
        return {name: None if v is None else v * 1000 / seconds for name, v in spent.items()}


async def _settle_watched(
    streams: Streams,
    tap: Tap,
    steps: tuple[str, ...],
    stall_timeout: float,
    probe: QueueProbe,
    api: ManagementApi,
) -> None:
    """Wait until the orders the streams watch are done and the queues drained, so their
    handling is not in the load's readings."""
    if not streams.watched:
        return
    deadline = time.monotonic() + stall_timeout
    while not all(tap.settled(order, steps) for order in streams.watched):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    await _drain(probe, api)


def _last_lines(stack: Stack, count: int = 8) -> str:
    """The end of the log of every process that has exited: why it did not start."""
    tails = []
    for name in stack.exited():
        log = stack.config.run_dir / f"{name}.log"
        lines = log.read_text(errors="replace").splitlines()[-count:] if log.exists() else []
        tails.append(f"--- the end of {log}:\n" + "\n".join(lines))
    return "\n".join(tails)


def _memory(stack: Stack) -> dict[str, float | None]:
    """Each service's resident memory: its largest replica's, what one process needs."""
    return {
        service: max(
            (cpu.resident_mb(stack.processes[replica].pid) or 0.0)
            for replica in stack.config.instances(service)
        )
        or None
        for service in SERVICE_NAMES
    }


async def _settle(load: Load, tap: Tap, steps: tuple[str, ...], stall_timeout: float) -> None:
    """Wait until every accepted order is done (or will never be), or nothing has moved for
    `stall_timeout` seconds."""
    placed = load.clock()
    while True:
        orders = [a.outcome.order_id for a in load.accepted if a.outcome]
        if all(tap.settled(order, steps) for order in orders):
            return
        if load.clock() - max(tap.last_arrival or placed, placed) > stall_timeout:
            return
        await asyncio.sleep(0.1)


async def _drain(probe: QueueProbe, api: ManagementApi, timeout: float = 90.0) -> list:
    """Wait until the services' work and retry queues are empty twice in a row, so that the
    events that mark no step (orders recording the last confirmations, a retried message)
    are handled and their CPU is in the reading; at most `timeout` seconds (longer than the
    longest default retry delay). The services' queue depths, at the end: their queues are
    listed through the management API (`api`), since wait queues are named by their delay."""
    deadline, empty_before = time.monotonic() + timeout, False
    while True:
        depths = [
            d for s in SERVICE_NAMES if (d := await service_depths(probe, api, s)) is not None
        ]
        empty = all(d.work == 0 and d.in_retry == 0 for d in depths)
        if (empty and empty_before) or time.monotonic() > deadline:
            return depths
        empty_before = empty
        await asyncio.sleep(0.25)


async def _report_progress(
    progress: Progress | None, load: Load, tap: Tap, options: Options, steps: tuple[str, ...]
) -> None:
    if progress is None:
        return
    started = load.clock()
    while True:
        accepted = [a.outcome.order_id for a in load.accepted if a.outcome]
        done = sum(1 for order in accepted if tap.reached(order, steps) is not None)
        errors = sum(1 for a in load.attempts if a.outcome and not a.accepted)
        progress.show(
            f"{load.clock() - started:6.1f} s  placed {len(load.attempts)}/{options.total_orders}"
            f"  accepted {len(accepted)}  confirmed {len(tap.seen['confirmed'])}"
            f"  {options.through} {done}  rejected {len(tap.seen['rejected'])}  errors {errors}"
        )
        await asyncio.sleep(progress.interval)
