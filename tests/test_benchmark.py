"""The benchmark's instruments, checked for real: its percentiles, its /proc CPU reader
against the kernel's own account of this process, the open loop's honesty about waiting,
and one short run of the whole system."""

import asyncio
import inspect
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from bench import cpu, report
from bench.cli import columns
from bench.load import Load, Outcome
from bench.observe import COMPLETED, EMAILED, MILESTONES, Appended, Tap
from bench.run import Options, retention_environment, run
from bench.servers import HISTORY_ROWS_PER_ORDER, Servers, drop_databases, lsn_bytes, write_history
from devstack import ROOT, StackConfig, instance_names
from email_service.domain.emails import CustomerOrder, order_confirmation
from orders.config import OrdersSettings
from servicekit.db import ensure_database, migrate
from servicekit.registry import SERVICE_NAMES, SERVICES
from testkit.events import order_created
from testkit.servers import Infrastructure


def burn(seconds: float) -> None:
    """Spend `seconds` of this process's CPU time."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


def test_percentiles_interpolate_between_the_nearest_ranks() -> None:
    hundred = [float(n) for n in range(1, 101)]
    assert report.percentile(hundred, 0.0) == 1.0
    assert report.percentile(hundred, 0.5) == 50.5
    assert report.percentile(hundred, 0.99) == pytest.approx(99.01)
    assert report.percentile(hundred, 1.0) == 100.0
    assert report.percentile([7.0], 0.99) == 7.0
    assert report.percentile([], 0.5) is None
    shuffled = [random.Random(4).expovariate(1.0) for _ in range(537)]
    expected = statistics.quantiles(shuffled, n=100, method="inclusive")
    for k in (50, 95, 99):
        assert report.percentile(shuffled, k / 100) == pytest.approx(expected[k - 1])


def test_latencies_are_summarised_in_milliseconds() -> None:
    summary = report.latency_ms([0.010, 0.030, 0.020])
    assert summary == pytest.approx(
        {"count": 3, "p50": 20.0, "p95": 29.0, "p99": 29.8, "max": 30.0}
    )
    assert report.latency_ms([])["p50"] is None


def test_the_cpu_total_is_the_system_alone_per_order() -> None:
    before = {"orders": 1.0, "postgresql": 2.0, "rabbitmq": None, "load-generator": 5.0, "host": 9}
    after = {"orders": 1.5, "postgresql": 3.0, "rabbitmq": None, "load-generator": 9.0, "host": 29}
    seconds, per_order = report.cpu_figures(before, after, orders=10)
    assert seconds["total"] == 1.5
    assert per_order == {
        "orders": 50.0,
        "postgresql": 100.0,
        "rabbitmq": None,
        "load-generator": 400.0,
        "host": 2000.0,
        "total": 150.0,
    }


def test_wal_positions_read_as_bytes() -> None:
    assert lsn_bytes("0/0") == 0
    assert lsn_bytes("16/B374D848") == (0x16 << 32) + 0xB374D848


def test_the_cpu_reader_agrees_with_the_kernel_about_this_process() -> None:
    me = os.getpid()
    before, kernel_before = cpu.process_stat(me), time.process_time()
    burn(0.3)
    after, kernel_after = cpu.process_stat(me), time.process_time()
    assert before is not None and after is not None
    assert after.own - before.own == pytest.approx(kernel_after - kernel_before, abs=3 * cpu.TICK)
    assert after.parent == os.getppid()
    assert cpu.own_seconds(me) >= after.own


CHILD = "burn(0.3)\nprint('burnt', flush=True)\ninput()"


EXIT_ALLOWANCE = 0.15
"""CPU seconds a child may spend between the reading and its exit, on a busy machine."""


def test_a_process_tree_counts_a_live_child_and_then_what_was_reaped_of_it() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", f"import time\n{inspect.getsource(burn)}\n{CHILD}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline() == "burnt\n"
    me = os.getpid()
    processes = cpu.all_processes()
    spent = processes[child.pid].own
    assert spent >= 0.3 - cpu.TICK
    assert cpu.tree_seconds(me, processes) == pytest.approx(
        processes[me].own + processes[me].reaped + spent
    )
    reaped_before = processes[me].reaped
    child.communicate("\n")  # it exits, and this process waits for it: its CPU is reaped
    reaped = cpu.process_stat(me).reaped - reaped_before
    # What it spent after the reading (answering, the interpreter's exit) is reaped too.
    assert spent - cpu.TICK <= reaped <= spent + EXIT_ALLOWANCE
    assert cpu.cpu_seconds({"gone": [child.pid]}) == {"gone": None}


def test_host_and_memory_readers() -> None:
    first = cpu.host_busy_seconds()
    burn(0.05)
    assert cpu.host_busy_seconds() >= first > 0
    assert cpu.resident_mb(os.getpid()) > 1
    command, me = cpu.process_stat(os.getpid()).command, os.getpid()
    first_word = Path("/proc/self/cmdline").read_bytes().split(b"\0")[0].decode()
    assert me in cpu.pids_named(command)
    assert me in cpu.pids_named(command, argument=first_word)
    assert me not in cpu.pids_named(command, argument="no-such-word")


async def test_the_open_loop_keeps_its_schedule_and_counts_a_stall_against_the_system() -> None:
    rate, stall = 100.0, 0.3

    async def send(index: int) -> Outcome:
        if index == 0:
            burn(stall)  # the load generator itself stalls: no request starts meanwhile
        return Outcome(status=202, order_id=str(index))

    load = Load()
    await load.open_loop(send, rate=rate, duration=0.2)
    attempts = sorted(load.attempts, key=lambda a: a.index)
    assert [a.index for a in attempts] == list(range(20))
    start = attempts[0].due
    for attempt in attempts:
        assert attempt.due == start + attempt.index / rate  # the schedule, whatever happened
        assert attempt.started >= attempt.due
    for attempt in attempts[1:]:  # all due during the stall, started after it
        assert attempt.started >= start + stall
        assert attempt.latency >= stall - attempt.index / rate


async def test_the_closed_loop_keeps_concurrency_requests_in_flight() -> None:
    in_flight, most = 0, 0

    async def send(index: int) -> Outcome:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        return Outcome(status=202, order_id=str(index)) if index % 10 else Outcome(error="Boom")

    load = Load()
    await load.closed_loop(send, orders=50, concurrency=4)
    assert most == 4
    assert sorted(a.index for a in load.attempts) == list(range(50))
    assert all(a.due == a.started and a.latency >= 0 for a in load.attempts)
    assert len(load.accepted) == 45


def confirmation_mail(order) -> bytes:
    """The confirmation of `order` as the SMTP sink keeps it: the subject the email
    service composes, in an mbox entry."""
    email = order_confirmation(CustomerOrder.from_event(order), cause=uuid.uuid4())
    return f"From MAILER-DAEMON\nSubject: {email.subject}\n\n{email.body}\n".encode()


def test_the_tap_times_each_step_once_by_order() -> None:
    tap, order = Tap(), order_created()
    a = str(order.order_id)
    for step in ("confirmed", "reserved"):
        tap.record(MILESTONES[step][0], json.dumps({"order_id": a}).encode(), at=1.0)
    tap.record("order.created.v2", json.dumps({"order_id": a}).encode(), at=2.0)  # no step
    assert tap.reached(a, COMPLETED) is None
    tap.record_mail(confirmation_mail(order), at=3.0)
    tap.record_mail(confirmation_mail(order), at=4.0)
    assert tap.reached(a, COMPLETED) == 3.0
    assert tap.redelivered == 1
    tap.record(MILESTONES["rejected"][0], b'{"order_id": "b"}', at=5.0)
    assert tap.settled("b", COMPLETED) and not tap.settled("c", COMPLETED)


def test_the_mailbox_is_read_a_whole_line_at_a_time(tmp_path: Path) -> None:
    mbox, tap, order = tmp_path / "mail.mbox", Tap(), order_created()
    appended = Appended(mbox)
    assert appended.lines() == b""  # no mail yet
    mail = confirmation_mail(order)
    cut = mail.index(b"confirmed: ") + 20  # in the middle of the order id
    mbox.write_bytes(mail[:cut])
    tap.record_mail(appended.lines(), at=1.0)
    assert tap.seen[EMAILED] == {}
    with mbox.open("ab") as appending:
        appending.write(mail[cut:])
    tap.record_mail(appended.lines(), at=2.0)
    assert tap.seen[EMAILED] == {str(order.order_id): 2.0}
    assert appended.lines() == b""


def test_another_tree_runs_its_own_interpreter(tmp_path: Path) -> None:
    assert StackConfig().service_python == sys.executable
    assert StackConfig(services_tree=ROOT).service_python == sys.executable
    other = StackConfig(services_tree=tmp_path).service_python
    assert other == str(tmp_path / ".venv" / "bin" / "python")


FIGURES = (
    "throughput.accepted_per_s",
    "throughput.end_to_end_per_s",
    *(
        f"latency_ms.{kind}.{p}"
        for kind in ("post", "confirmed", "completed")
        for p in ("p50", "p95", "p99")
    ),
    *(
        f"cpu_ms_per_order.{name}"
        for name in (*report.SYSTEM, "total", "pg-backends", "load-generator", "host")
    ),
    *(f"idle_cpu_ms_per_s.{name}" for name in (*report.SYSTEM, "total")),
    "postgresql.commits_per_order_total",
    "postgresql.wal_bytes_per_order",
    *(f"postgresql.commits_per_order.{name}" for name in SERVICE_NAMES),
    *(f"memory_mb.{name}.{when}" for name in SERVICE_NAMES for when in ("before", "after")),
    "orders.transport_errors",
    "broker.dead_letters",
    *(
        f"tables.{when}.{name}.{table}.{figure}"
        for when in ("before", "after")
        for name in SERVICE_NAMES
        for table in ("outbox", "processed_messages")
        for figure in ("rows", "dead", "bytes")
    ),
    *(f"tables.after.orders.idempotency_keys.{figure}" for figure in ("rows", "dead", "bytes")),
)


SMALL_POOLS = {"PREFETCH": "4", "DB_POOL_SIZE": "7"}


@pytest.mark.e2e
@pytest.mark.parametrize("replicas", [1, 2])
async def test_a_short_run_completes_every_order_and_reports_every_figure(
    infrastructure: Infrastructure, tmp_path: Path, replicas: int
) -> None:
    servers = Servers(
        infrastructure.rabbitmq_url, infrastructure.postgres_url, tuple(infrastructure.rabbitmqctl)
    )
    # Small pools: the PostgreSQL server may be shared, and its connections scarce.
    small = {f"{s.env_prefix}{name}": n for s in SERVICES for name, n in SMALL_POOLS.items()}
    options = Options(
        orders=20,
        concurrency=4,
        idle_seconds=0.5,
        run_root=tmp_path,
        service_env=small,
        replicas=replicas,
        streams=6,
        retention=4.0 if replicas == 1 else None,
        vacuum=0.2 if replicas == 1 else None,  # often enough to sample a short load
    )
    figures = await run(options, servers)
    text = report.text(figures)
    assert ("; retention 4 s; VACUUM every 0.2 s" in text) == (replicas == 1), text
    samples = figures["tables"]["during"]
    if replicas == 1:  # sampled (and vacuumed) during the load: a half-way column
        assert samples and all("outbox" in s["tables"]["orders"] for s in samples), samples
        assert re.search(r"retained tables, rows \(dead\) size, start -> [\d.]+ s -> end:", text)
    else:
        assert samples == [] and "retained tables, rows (dead) size, start -> end:" in text

    orders = figures["orders"]
    counted = ("placed", "accepted", "confirmed", "completed", "done", "rejected", "unsettled")
    assert {name: orders[name] for name in counted} == dict.fromkeys(counted[:5], 20) | {
        "rejected": 0,
        "unsettled": 0,
    }, text
    assert (orders["transport_errors"], orders["http_errors"]) == (0, {}), text
    streams = figures["streams"]
    assert (streams["opened"], streams["open_at_end"], streams["failed"]) == (6, 6, {}), text
    assert streams["events"] >= 6, text  # each stream's status when it opened, at least
    assert "6 still open at the end" in text
    flat = report.flatten(figures)
    # Servers in containers (testcontainers) run outside this PID namespace: no CPU for them.
    in_containers = infrastructure.rabbitmqctl[0] == "docker"
    elsewhere = ("postgresql", "pg-backends", "rabbitmq") if in_containers else ()
    expected = [path for path in FIGURES if path.rpartition(".")[2] not in elsewhere]
    missing = [path for path in expected if flat.get(path) is None]
    assert missing == [], text
    assert figures["revision"]["commit"] and figures["shutdown"] == dict.fromkeys(
        (*instance_names(replicas), "smtp-sink"), 0
    )
    assert "POST -> confirmed" in text
    json.dumps(figures)

    admin = await asyncpg.connect(f"{servers.postgres_url}/postgres")
    try:
        left = await admin.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
            figures["system"]["database_prefix"],
        )
    finally:
        await admin.close()
    assert left == []
    assert figures["system"]["vhost"] not in infrastructure.ctl("list_vhosts")


@pytest.mark.integration
async def test_history_is_published_outbox_rows_and_processed_records_in_every_database(
    infrastructure: Infrastructure, tmp_path: Path
) -> None:
    prefix = f"benchhist{os.getpid()}_"
    urls = [f"{infrastructure.postgres_url}/{prefix}{name}" for name in ("orders", "email")]
    for url in urls:
        await ensure_database(url)
        await migrate(url, tmp_path)
    admin = await asyncpg.connect(f"{infrastructure.postgres_url}/postgres")
    try:
        await write_history(infrastructure.postgres_url, prefix, 50)
        for url in urls:
            conn = await asyncpg.connect(url)
            try:
                counts = await conn.fetchrow(
                    """SELECT (SELECT count(*) FROM outbox WHERE published_at IS NOT NULL)
                                  AS published,
                              (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS pending,
                              (SELECT count(*) FROM processed_messages) AS processed"""
                )
            finally:
                await conn.close()
            rows = 50 * HISTORY_ROWS_PER_ORDER
            assert dict(counts) == {"published": rows, "pending": 0, "processed": rows}, url
    finally:
        await drop_databases(admin, prefix)
        await admin.close()


def test_the_medians_of_each_tree_stand_side_by_side() -> None:
    def run(tree: str, commit: str, cpu_total: float, rate: float) -> dict:
        return {
            "revision": {"tree": tree, "commit": commit, "dirty": False},
            "cpu_ms_per_order": {"total": cpu_total},
            "throughput": {"end_to_end_per_s": rate},
        }

    runs = [
        run("/a", "aaa", 100.0, 10.0),
        run("/b", "bbb", 50.0, 20.0),
        run("/a", "aaa", 120.0, 12.0),
        run("/b", "bbb", 40.0, 30.0),
        run("/a", "aaa", 300.0, 11.0),
    ]
    medians = columns(runs)
    assert medians == {
        "aaa": {"cpu_ms_per_order.total": 120.0, "throughput.end_to_end_per_s": 11.0},
        "bbb": {"cpu_ms_per_order.total": 45.0, "throughput.end_to_end_per_s": 25.0},
    }
    table = report.comparison(medians, repeat=3).splitlines()
    assert table[0].split() == ["median", "of", "3", "run(s)", "aaa", "bbb", "last/first"]
    assert "CPU ms/order total" in table[-1] and table[-1].split()[-3:] == [
        "120.00",
        "45.00",
        "0.38",
    ]


@pytest.mark.parametrize("seconds", [4.0, 20.0])
def test_a_short_retention_passes_the_settings_floor(monkeypatch, seconds: float) -> None:
    environment = retention_environment(seconds)
    for entry in SERVICES:
        assert environment[f"{entry.env_prefix}OUTBOX_RETENTION"] == f"{seconds:g}"
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings, kept = OrdersSettings(), timedelta(seconds=seconds)
    assert settings.outbox_retention == settings.processed_message_retention == kept
    assert settings.idempotency_key_retention == kept
    assert settings.retention_interval == kept / 4
    assert 2 * settings.retry_span <= kept
