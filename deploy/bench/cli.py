"""`make bench`: the options, runs one after another, the reports and the side-by-side medians."""

import argparse
import asyncio
import json
import sys
from dataclasses import fields
from pathlib import Path

import asyncpg

from devstack import ROOT, StackConfig

from . import report
from .observe import THROUGH
from .run import Options, Progress, run
from .servers import Servers

EXAMPLES = """\
examples:
  make bench                                        closed loop, 1500 orders, 16 at a time
  make bench BENCH_ARGS="--rate 100 --duration 20"  open loop, 100 orders/s for 20 s
  make bench BENCH_ARGS="--through shipped --orders 300"
  make bench BENCH_ARGS="--orders 600 --streams 500"  500 status streams open meanwhile
  make bench BENCH_ARGS="--orders 8000 --retention 20 --vacuum 5"  bounded tables
  make bench BENCH_ARGS="--tree /tmp/base --tree . --repeat 3 --json ab.json"
"""


OPTIONS = {
    "load": (
        ("--orders", int, "closed loop: orders"),
        ("--concurrency", int, "closed loop: clients, each placing its next order when answered"),
        ("--rate", float, "open loop: orders started a second, on a fixed schedule"),
        ("--duration", float, "open loop: seconds"),
        ("--skus", int, "spread the orders over this many SKUs (1: one hot SKU)"),
        (
            "--dispatch-delay",
            float,
            "SHIPPING_DISPATCH_DELAY, seconds (default: 0 through "
            "shipped, else 3600: nothing ships during the run)",
        ),
        (
            "--max-connections",
            int,
            "open loop: HTTP connections at most; later requests wait, and their wait counts",
        ),
    ),
    "system": (
        ("--replicas", int, "processes of every service; orders go to the orders ones in turn"),
        (
            "--history",
            int,
            "before the load, give each service's outbox and processed-message records the "
            "rows this many earlier orders would have left (published, never vacuumed)",
        ),
        (
            "--streams",
            int,
            "hold this many status streams (GET /orders/{id}/events) open during the load, "
            "each on an order placed for it before, at confirmed (nothing ships)",
        ),
        (
            "--retention",
            float,
            "keep published outbox rows, processed event ids and idempotency keys this many "
            "seconds, in rounds every quarter of it (retry delays shortened to fit)",
        ),
        (
            "--vacuum",
            float,
            "VACUUM the retained tables this often during the load, as autovacuum would on a "
            "server that has it on (its CPU counts in postgresql's)",
        ),
    ),
    "runs": (
        ("--repeat", int, "run every tree N times, alternating (A B A B)"),
        ("--json", Path, "also write every figure to this file"),
        ("--idle-seconds", float, "sample the CPU this long, idle, before the load"),
        ("--stall-timeout", float, "stop waiting once no order has moved for this long"),
    ),
}
"""Options taking a value: (flag, type, help); the default is the `Options` field's."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="make bench",
        description="Start the system on free ports, place orders, report throughput, latency "
        "and CPU per order, stop it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = {**vars(Options()), "repeat": 1, "json": None}
    groups = {name: p.add_argument_group(name) for name in ("load", "system", "runs")}
    for name, options in OPTIONS.items():
        for flag, kind, text in options:
            default = defaults[flag.removeprefix("--").replace("-", "_")]
            shown = "" if default is None else " (default: %(default)s)"
            groups[name].add_argument(flag, type=kind, default=default, help=text + shown)
    groups["load"].add_argument(
        "--through",
        choices=sorted(THROUGH),
        default=Options.through,
        help="completed: confirmed, reserved and confirmation emailed; "
        "shipped: confirmed, reserved and shipped",
    )
    groups["load"].add_argument(
        "--idempotency-keys", action="store_true", help="send an Idempotency-Key on every POST"
    )
    groups["system"].add_argument(
        "--tree",
        type=Path,
        action="append",
        metavar="DIR",
        help="run the services from this checkout (with its .venv); repeat it to compare",
    )
    groups["system"].add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for every service, e.g. ORDERS_PREFETCH=32",
    )
    groups["runs"].add_argument(
        "--keep", action="store_true", help="keep the databases, virtual host and logs"
    )
    return p


def options(args: argparse.Namespace, tree: Path) -> Options:
    """The options of one run: each command-line option sets the `Options` field of its name."""
    given = {f.name: getattr(args, f.name) for f in fields(Options) if hasattr(args, f.name)}
    service_env = dict(item.split("=", 1) for item in args.service_env)
    return Options(**given | {"tree": tree, "service_env": service_env})


def columns(runs: list[dict]) -> dict[str, dict[str, float]]:
    """The medians of each tree's runs, named by revision (and tree, where two share one)."""
    by_tree: dict[str, list[dict]] = {}
    for figures in runs:
        by_tree.setdefault(figures["revision"]["tree"], []).append(figures)
    labels = {tree: report.revision_label(found[0]["revision"]) for tree, found in by_tree.items()}
    if len(set(labels.values())) < len(labels):
        labels = {tree: f"{label} {tree}" for tree, label in labels.items()}
    return {labels[tree]: report.medians(found) for tree, found in by_tree.items()}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.service_env and not all("=" in item for item in args.service_env):
        parser().error("--service-env takes NAME=VALUE")
    if args.streams and (args.through == "shipped" or args.dispatch_delay is not None):
        parser().error(
            "--streams holds streams on orders that stay confirmed: "
            "not with --through shipped or --dispatch-delay"
        )
    trees = [tree.resolve() for tree in args.tree or [ROOT]]
    for tree in trees:
        if not Path(python := StackConfig(services_tree=tree).service_python).exists():
            parser().error(f"{tree} has no {python}: run `uv sync --locked` there first")
    servers = Servers.from_environment()
    runs: list[dict] = []
    count = args.repeat * len(trees)
    for _ in range(args.repeat):
        for tree in trees:
            print(f"run {len(runs) + 1} of {count}: the services of {tree}", file=sys.stderr)
            try:
                figures = asyncio.run(run(options(args, tree), servers, Progress()))
            except (OSError, RuntimeError, TimeoutError, asyncpg.PostgresError) as exc:
                # The servers refused (a connection, rabbitmqctl) or a service did not start.
                print(f"run {len(runs) + 1} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 2
            print(report.text(figures) + "\n", flush=True)
            runs.append(figures)
    medians = columns(runs)
    if count > 1:
        print(report.comparison(medians, args.repeat))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": medians}, indent=2) + "\n")
    return 1 if any(report.troubled(figures) for figures in runs) else 0
