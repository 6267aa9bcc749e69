"""The figures of a run, as a dict for scripts (`--json`) and as text for people; medians of
several runs side by side."""

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .load import Attempt
from .observe import COMPLETED, Tap
from .servers import PostgresFigures

SYSTEM = ("orders", "email", "inventory", "shipping", "smtp-sink", "postgresql", "rabbitmq")
"""The processes whose CPU makes the total, in the order they are printed."""

LOAD_GENERATOR, HOST, TOTAL = "load-generator", "host", "total"
PG_BACKENDS = "pg-backends"
"""The PostgreSQL backends serving this run's databases: part of `postgresql`, and the part
that others' work on a shared server does not blur."""


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The `fraction` quantile, interpolated between the two nearest ranks (as numpy's
    default and `statistics.quantiles(method="inclusive")`); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def latency_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    summary: dict[str, float | int | None] = {"count": len(seconds)}
    for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
        value = percentile(seconds, fraction)
        summary[name] = None if value is None else value * 1000
    return summary


def per(amount: float | None, count: int, scale: float = 1.0) -> float | None:
    return None if amount is None or count == 0 else amount * scale / count


def cpu_figures(
    before: Mapping[str, float | None], after: Mapping[str, float | None], orders: int
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """(CPU seconds, CPU ms per order) of each process group from two readings; the total
    is the system's processes (SYSTEM), never the load generator nor the host's whole."""
    seconds: dict[str, float | None] = {}
    for name in after:
        start, end = before.get(name), after.get(name)
        seconds[name] = None if start is None or end is None else end - start
    measured = [seconds[name] for name in SYSTEM if seconds.get(name) is not None]
    seconds[TOTAL] = sum(measured) if measured else None
    return seconds, {name: per(value, orders, 1000) for name, value in seconds.items()}


@dataclass
class Measured:
    """What one run recorded; `figures` makes the report of it."""

    revision: dict
    load: dict
    """The options that shaped the load (mode, orders, rate, SKUs, through, ...)."""
    steps: tuple[str, ...]
    """The steps an order must pass to count as done (`observe.THROUGH`)."""
    attempts: list[Attempt]
    tap: Tap
    started: float
    """When the load started: the CPU, commits and WAL readings before it were taken then."""
    finished: float
    """When the readings after it were taken: every order settled and the queues drained."""
    cpu_before: dict[str, float | None]
    cpu_after: dict[str, float | None]
    idle_ms_per_s: dict[str, float | None]
    database_prefix: str
    pg_before: PostgresFigures
    pg_after: PostgresFigures
    memory_before: dict[str, float | None]
    memory_after: dict[str, float | None]
    dead_letters: int = 0
    in_retry: int = 0
    shutdown: dict[str, int] = field(default_factory=dict)
    system: dict[str, object] = field(default_factory=dict)
    """Where the system ran: its database prefix, virtual host, logs; connections free."""
    streams: dict[str, object] = field(default_factory=dict)
    """The status streams held open during the load (`run._open_streams`)."""
    table_samples: list[dict] = field(default_factory=list)
    """`servers.table_figures` every few seconds of the load (`run._watch_tables`)."""
    tables: dict[str, object] = field(default_factory=dict)
    """`servers.table_figures` before the load, the samples during it, and once the
    services have stopped."""


def figures(run: Measured) -> dict:
    """Every figure of the run, JSON-ready."""
    accepted = [a for a in run.attempts if a.accepted]
    due = {a.outcome.order_id: a.due for a in accepted if a.outcome and a.outcome.order_id}
    tap = run.tap

    def reached(steps: Sequence[str]) -> dict[str, float]:
        times = {order: tap.reached(order, steps) for order in due}
        return {order: at for order, at in times.items() if at is not None}

    done, completed = reached(run.steps), reached(COMPLETED)
    confirmed, shipped = reached(("confirmed",)), reached(("shipped",))
    rejected = [order for order in due if order in tap.seen["rejected"]]
    outcomes = [a.outcome for a in run.attempts if a.outcome is not None]
    answered = [a.finished for a in run.attempts if a.finished is not None]
    first_due = min((a.due for a in run.attempts), default=run.started)
    placing = max(answered) - first_due if answered else None
    end_to_end = max(done.values()) - first_due if done else None

    latency = {
        "post": latency_ms([a.latency for a in accepted if a.latency is not None]),
        "confirmed": latency_ms([at - due[order] for order, at in confirmed.items()]),
        "completed": latency_ms([at - due[order] for order, at in completed.items()]),
    }
    if "shipped" in run.steps:
        latency["shipped"] = latency_ms([at - due[order] for order, at in shipped.items()])

    cpu_seconds, cpu_per_order = cpu_figures(run.cpu_before, run.cpu_after, len(done))
    commits = {
        name.removeprefix(run.database_prefix): count - run.pg_before.commits.get(name, 0)
        for name, count in sorted(run.pg_after.commits.items())
    }
    wal_bytes = run.pg_after.wal_bytes - run.pg_before.wal_bytes
    return {
        "revision": run.revision,
        "load": run.load,
        "system": run.system,
        "orders": {
            "placed": len(run.attempts),
            "accepted": len(accepted),
            "confirmed": len(confirmed),
            "rejected": len(rejected),
            "completed": len(completed),
            "shipped": len(shipped),
            "done": len(done),
            "unsettled": sum(1 for order in due if not tap.settled(order, run.steps)),
            "transport_errors": sum(1 for o in outcomes if o.error is not None),
            "transport_error_kinds": dict(Counter(o.error for o in outcomes if o.error)),
            "http_errors": dict(
                Counter(str(o.status) for o in outcomes if o.status not in (None, 202))
            ),
            "events_seen_twice": tap.redelivered,
        },
        "throughput": {
            "accepted_per_s": len(accepted) / placing if placing else None,
            "end_to_end_per_s": len(done) / end_to_end if end_to_end else None,
            "placing_seconds": placing,
            "end_to_end_seconds": end_to_end,
            "measured_seconds": run.finished - run.started,
        },
        "latency_ms": latency,
        "cpu_ms_per_order": cpu_per_order,
        "cpu_seconds": cpu_seconds,
        "idle_cpu_ms_per_s": run.idle_ms_per_s,
        "postgresql": {
            "commits": commits,
            "commits_per_order": {name: per(n, len(done)) for name, n in commits.items()},
            "commits_per_order_total": per(sum(commits.values()), len(done)),
            "wal_bytes": wal_bytes,
            "wal_bytes_per_order": per(wal_bytes, len(done)),
        },
        "memory_mb": {
            name: {"before": run.memory_before.get(name), "after": run.memory_after.get(name)}
            for name in run.memory_before
        },
        "broker": {"dead_letters": run.dead_letters, "in_retry": run.in_retry},
        "streams": run.streams,
        "tables": run.tables,
        "shutdown": run.shutdown,
    }


def flatten(figures: Mapping, prefix: str = "") -> dict[str, float]:
    """Every number in nested figures, keyed by its dotted path (`cpu_ms_per_order.total`)."""
    flat: dict[str, float] = {}
    for key, value in figures.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{path}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[path] = value
    return flat


def medians(runs: Iterable[Mapping]) -> dict[str, float]:
    """The median of every figure over the runs (those of one tree)."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for path, value in flatten(run).items():
            values.setdefault(path, []).append(value)
    return {path: statistics.median(found) for path, found in values.items()}


def _counts(counts: Mapping[str, int]) -> str:
    return f" ({', '.join(f'{n} x {what}' for what, n in counts.items())})" if counts else ""


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def text(figures: Mapping) -> str:
    """The report of one run."""
    load, orders, rate = figures["load"], figures["orders"], figures["throughput"]
    revision = figures["revision"]
    if load["mode"] == "open":
        shape = f"open loop, {load['rate']:g} orders/s for {load['duration']:g} s"
    else:
        shape = f"closed loop, {load['orders']} orders, {load['concurrency']} concurrent"
    lines = [
        f"orderflow benchmark: services from {revision['tree']} at {revision_label(revision)}"
        f" ({revision['branch']})",
        f"load: {shape}; {load['skus']} SKU(s); through {load['through']}; "
        f"SHIPPING_DISPATCH_DELAY {load['dispatch_delay']:g} s"
        + ("; Idempotency-Key on every POST" if load["idempotency_keys"] else "")
        + (f"; {load['history']} earlier orders' rows" if load.get("history") else "")
        + (f"; {load['replicas']} replicas of each service" if load.get("replicas", 1) > 1 else "")
        + (f"; retention {load['retention']:g} s" if load.get("retention") else "")
        + (f"; VACUUM every {load['vacuum']:g} s" if load.get("vacuum") else ""),
        f"orders: {orders['placed']} placed, {orders['accepted']} accepted, "
        f"{orders['confirmed']} confirmed, {orders['rejected']} rejected, "
        f"{orders['completed']} completed"
        + (f", {orders['shipped']} shipped" if load["through"] == "shipped" else "")
        + (f"; {orders['unsettled']} NOT SETTLED" if orders["unsettled"] else ""),
        f"errors: {orders['transport_errors']} transport"
        + _counts(orders["transport_error_kinds"])
        + f", {sum(orders['http_errors'].values())} HTTP"
        + _counts(orders["http_errors"])
        + f"; broker at the end: {figures['broker']['dead_letters']} dead-lettered, "
        f"{figures['broker']['in_retry']} in retry",
        *_streams_line(figures.get("streams") or {}),
        f"throughput: {_number(rate['accepted_per_s'])} orders/s accepted "
        f"({_number(rate['placing_seconds'])} s placing), "
        f"{_number(rate['end_to_end_per_s'])} orders/s end to end "
        f"({_number(rate['end_to_end_seconds'])} s to the last one {load['through']})",
        "",
        f"{'latency, ms':<22}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}",
    ]
    for name, label in (
        ("post", "POST /orders"),
        ("confirmed", "POST -> confirmed"),
        ("completed", "POST -> completed"),
        ("shipped", "POST -> shipped"),
    ):
        if (summary := figures["latency_ms"].get(name)) is not None:
            lines.append(
                f"  {label:<20}"
                + "".join(f"{_number(summary[p]):>9}" for p in ("p50", "p95", "p99", "max"))
            )
    per_order, idle = figures["cpu_ms_per_order"], figures["idle_cpu_ms_per_s"]
    lines += [
        "",
        f"{'CPU, ms per order':<22}{'':>9}   idle before the load, ms/s"
        f" (measured over {_number(figures['throughput']['measured_seconds'])} s)",
    ]
    for name in (*SYSTEM, TOTAL, PG_BACKENDS, LOAD_GENERATOR, HOST):
        note = {
            PG_BACKENDS: "   (of postgresql: the backends of this run's databases)",
            LOAD_GENERATOR: "   (this process: load and tap; not in the total)",
            HOST: "   (every process on the machine, others' work included)",
            "postgresql": "   (server-wide)",
            "rabbitmq": "   (server-wide)",
        }.get(name, "")
        idle_rate = f"{_number(idle.get(name)):>9}" if name in idle else f"{'':>9}"
        lines.append(f"  {name:<20}{_number(per_order.get(name), 2):>9}{idle_rate}{note}")
    pg = figures["postgresql"]
    by_database = ", ".join(
        f"{name} {_number(n, 2)}" for name, n in pg["commits_per_order"].items()
    )
    lines += [
        "",
        f"PostgreSQL: {_number(pg['commits_per_order_total'], 2)} commits per order "
        f"({by_database or 'none'}); {_number(per(pg['wal_bytes_per_order'], 1024))}"
        f" kB WAL per order (server-wide); {figures['system']['postgresql_connections_free']}"
        f" of {figures['system']['postgresql_max_connections']} connections free at the start",
        "resident memory, MB (before -> after): "
        + ", ".join(
            f"{name} {_number(mb['before'], 0)} -> {_number(mb['after'], 0)}"
            for name, mb in figures["memory_mb"].items()
        ),
    ]
    lines += _tables_lines(figures.get("tables") or {})
    if any(code != 0 for code in figures["shutdown"].values()):
        lines.append(f"UNCLEAN SHUTDOWN: {figures['shutdown']}")
    return "\n".join(lines)


def _streams_line(streams: Mapping) -> list[str]:
    if not streams.get("requested"):
        return []
    return [
        f"status streams: {streams['requested']} held open on orders of their own during the "
        f"load: {streams['opened']} opened, {streams['open_at_end']} still open at the end, "
        f"{streams['events']} events read"
        + (f"; FAILED{_counts(streams['failed'])}" if streams["failed"] else "")
    ]


def _size(size: int) -> str:
    return f"{size / 1024:.0f} kB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MB"


def _tables_lines(tables: Mapping) -> list[str]:
    """Each service's retained tables at the start, half-way through the load (the sample
    nearest to it, if any) and at the end: live rows (dead rows) size. Bounded tables hold
    about as much half-way as at the end."""
    if not tables:
        return []
    samples = tables.get("during") or []
    halfway = samples[(len(samples) - 1) // 2] if samples else None
    columns = [tables["before"], *([halfway["tables"]] if halfway else []), tables["after"]]
    heading = f"start -> {halfway['at_s']:g} s -> end" if halfway else "start -> end"
    lines = [f"retained tables, rows (dead) size, {heading}:"]
    for service, found in tables["after"].items():
        shown = []
        for table in found:
            readings = [
                column.get(service, {}).get(table, {"rows": 0, "dead": 0, "bytes": 0})
                for column in columns
            ]
            shown.append(
                f"{table} "
                + " -> ".join(f"{r['rows']} ({r['dead']}) {_size(r['bytes'])}" for r in readings)
            )
        lines.append(f"  {service}: " + "; ".join(shown))
    return lines


def troubled(figures: Mapping) -> bool:
    """Whether the run had failed requests, orders left unsettled, status streams that did
    not stay open, or an unclean shutdown."""
    orders, streams = figures["orders"], figures.get("streams") or {}
    failed = orders["transport_errors"] or orders["http_errors"] or orders["unsettled"]
    streams_lost = streams.get("open_at_end", 0) < streams.get("requested", 0)
    return bool(failed or streams_lost or any(figures["shutdown"].values()))


def revision_label(revision: Mapping) -> str:
    return f"{revision['commit'] or 'unknown'}{'+dirty' if revision['dirty'] else ''}"


COMPARED = (
    ("orders/s accepted", "throughput.accepted_per_s", 1),
    ("orders/s end to end", "throughput.end_to_end_per_s", 1),
    ("POST p50, ms", "latency_ms.post.p50", 1),
    ("POST p99, ms", "latency_ms.post.p99", 1),
    ("-> confirmed p50, ms", "latency_ms.confirmed.p50", 1),
    ("-> confirmed p99, ms", "latency_ms.confirmed.p99", 1),
    ("-> shipped p50, ms", "latency_ms.shipped.p50", 1),
    *(
        (f"CPU ms/order {name}", f"cpu_ms_per_order.{name}", 2)
        for name in (*SYSTEM, TOTAL, PG_BACKENDS)
    ),
    (f"CPU ms/order {LOAD_GENERATOR}", f"cpu_ms_per_order.{LOAD_GENERATOR}", 2),
    (f"CPU ms/order {HOST}", f"cpu_ms_per_order.{HOST}", 2),
    ("commits/order", "postgresql.commits_per_order_total", 2),
    ("WAL bytes/order", "postgresql.wal_bytes_per_order", 0),
)
"""What the side-by-side table shows, from the medians of each tree's runs."""


def comparison(columns: Mapping[str, Mapping[str, float]], repeat: int) -> str:
    """Medians of each tree's runs side by side, the first tree as the baseline of the ratio
    `last / first` (below 1: less time, less CPU, fewer commits; above 1 for orders/s)."""
    names = list(columns)
    width = max(14, *(len(name) + 2 for name in names))
    header = f"{f'median of {repeat} run(s)':<24}"
    header += "".join(f"{name:>{width}}" for name in names)
    if len(names) > 1:
        header += f"{'last/first':>12}"
    lines = [header]
    for label, path, digits in COMPARED:
        values = [columns[name].get(path) for name in names]
        if all(value is None for value in values):
            continue
        row = f"{label:<24}" + "".join(f"{_number(v, digits):>{width}}" for v in values)
        if len(names) > 1:
            first, last = values[0], values[-1]
            ratio = last / first if first and last is not None else None
            row += f"{_number(ratio, 2):>12}"
        lines.append(row)
    return "\n".join(lines)
