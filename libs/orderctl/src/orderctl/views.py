"""How the CLI shows things: rich renderables built from the plain results.

Anything that comes from a message or a database (reasons, bodies, headers) is wrapped in
`Text`, so brackets in it are never read as rich markup.
"""

from collections.abc import Iterable, Sequence

from rich.console import Group, RenderableType
from rich.json import JSON
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from contracts.audit import EmailKind
from servicekit import failures

from .audit import EXPECTED, AuditReport, ProblemKind
from .broker import ServiceDepths
from .dead_letters import DeadLetter, ReplayResult, by_reason
from .management import ListedQueue
from .migration import ApplyResult
from .text import header_text, plural, when
from .topology import ServicePlan


def depths_table(rows: Iterable[ServiceDepths]) -> Table:
    table = Table(title="Queues by service")
    table.add_column("Service", style="bold")
    table.add_column("Dead letters", justify="right")
    table.add_column("In retry", justify="right")
    table.add_column("Work queue", justify="right")
    table.add_column("Retry tiers", justify="right", style="dim")
    for row in rows:
        table.add_row(
            row.service,
            _count(row.dead_letters, alarm="red"),
            _count(row.in_retry, alarm="yellow"),
            str(row.work),
            str(row.retry_tiers),
        )
    return table


def _count(value: int, alarm: str) -> Text:
    return Text(str(value), style=f"bold {alarm}" if value else "green")


def reasons_table(letters: Sequence[DeadLetter], queue: str) -> Table:
    """Dead letters grouped by failure reason, most frequent first."""
    table = Table(title=f"{plural(len(letters), 'message')} in {queue}, by failure reason")
    table.add_column("Reason", ratio=3)
    table.add_column("Count", justify="right")
    table.add_column("Routing keys", ratio=1)
    table.add_column("Exception")
    table.add_column("First failure", no_wrap=True)
    table.add_column("Last failure", no_wrap=True)
    for group in by_reason(letters):
        table.add_row(
            Text(group.reason, style="red"),
            str(len(group.letters)),
            Text(", ".join(group.routing_keys)),
            Text(", ".join(group.exceptions)),
            when(group.first_failure_at),
            when(group.last_failure_at),
        )
    return table


def letters_table(letters: Iterable[DeadLetter], title: str) -> Table:
    table = Table(title=title, expand=True)
    table.add_column("Message id", no_wrap=True)
    table.add_column("Routing key", no_wrap=True)
    table.add_column("Attempts", justify="right", no_wrap=True)
    table.add_column("Reason", ratio=1, no_wrap=True, overflow="ellipsis")  # takes what is left
    for letter in letters:
        table.add_row(
            Text(letter.message_id or "(none)"),
            Text(letter.routing_key),
            "" if letter.attempts is None else str(letter.attempts),
            Text(letter.reason),
        )
    return table


def letter_detail(letter: DeadLetter) -> Group:
    return Group(_properties(letter), _headers(letter), _body(letter), _history(letter))


def _properties(letter: DeadLetter) -> Table:
    message = letter.message
    exchange, routing_key = letter.original_route
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for name, value in [
        ("Message id", letter.message_id),
        ("Original route", f"exchange {exchange!r}, routing key {routing_key!r}"),
        ("Correlation id", message.correlation_id),
        ("Type", message.type),
        ("Content type", message.content_type),
        ("App id", message.app_id),
        ("Persistent", "yes" if message.delivery_mode == 2 else "no"),
    ]:
        table.add_row(name, Text(str(value or "")))
    return table


def _headers(letter: DeadLetter) -> Table:
    table = Table(title="Headers", title_justify="left")
    table.add_column("Header", no_wrap=True)
    table.add_column("Value")
    for name, value in sorted(letter.headers.items()):
        shown = "(see failure history)" if name == "x-death" else header_text(value)
        table.add_row(Text(name), Text(shown))
    return table


def _body(letter: DeadLetter) -> Panel:
    event = letter.event
    if event is not None:
        return Panel(JSON.from_data(event), title="Body", title_align="left")
    raw = letter.body.decode("utf-8", "backslashreplace")
    return Panel(
        Text(raw),
        title=f"Body: not JSON ({len(letter.body)} bytes)",
        title_align="left",
        border_style="red",
    )


def _history(letter: DeadLetter) -> Table:
    table = Table(title="Failure history", title_justify="left")
    table.add_column("Source")
    table.add_column("Where")
    table.add_column("Reason")
    table.add_column("Count", justify="right")
    table.add_column("Time", no_wrap=True)
    headers = letter.headers
    table.add_row(
        "consumer",
        str(headers.get(failures.FAILURE_SERVICE, "")),
        Text(f"{letter.exception}: {letter.reason}" if letter.exception else letter.reason),
        "" if letter.attempts is None else f"{letter.attempts} attempts",
        f"{when(letter.first_failure_at)} → {when(letter.last_failure_at)}",
    )
    for death in letter.deaths:
        table.add_row(
            "broker", Text(death.queue), Text(death.reason), str(death.count), when(death.time)
        )
    return table


def replay_summary(result: ReplayResult, work_queue: str) -> RenderableType:
    replayed = f"replayed {plural(len(result.replayed), 'message')} to {work_queue}"
    lines = [Text(replayed, style="green" if result.replayed else "yellow")]
    for letter, error in result.failed:
        lines.append(
            Text(f"not replayed, left in the DLQ: {letter.message_id}: {error}", style="red")
        )
    return Group(*lines)


def audit_summary(report: AuditReport) -> Table:
    orders, services = (
        plural(report.orders_checked, "order"),
        plural(len(report.services), "service"),
    )
    table = Table(title=f"Audit of {orders}, {services}")
    table.add_column("Check")
    table.add_column("Checked", justify="right")
    table.add_column("Problems", justify="right")
    for kind in ProblemKind:
        checked = report.orders_checked if kind.per_order else len(report.services)
        table.add_row(kind.check, str(checked), _count(report.count(kind), alarm="red"))
    return table


def expectations_markdown() -> str:
    """`EXPECTED` as a markdown table, for `orderctl audit --help`."""
    rows = ["| order | reservation | shipment | emails |", "|---|---|---|---|"]
    for status, expected in EXPECTED.items():
        if not expected.settled:
            rows.append(f"| {status} | any, or none yet | any | any |")
            continue
        reservation = " or ".join(sorted(expected.reservation or ()))
        shipment = " or ".join(sorted(expected.shipment or ()))
        emails = ", ".join(sorted(expected.emails or ()))
        rows.append(f"| {status} | {reservation} | {shipment} | {emails} |")
    notes = (
        "Every order has exactly one shipment and at most one email of each kind, a settled one "
        "exactly one reservation. An order confirmed before (its history says so) also got its "
        f"{EmailKind.ORDER_CONFIRMATION}."
    )
    return "\n".join([*rows, "", notes])


def problems_table(report: AuditReport) -> Table:
    table = Table(title=plural(len(report.problems), "problem"))
    table.add_column("Kind", style="red", no_wrap=True)
    table.add_column("Order / service", no_wrap=True)
    table.add_column("Detail")
    for problem in report.problems:
        table.add_row(problem.kind.value, Text(problem.subject), Text(problem.detail))
    return table


def topology_plan(plans: Iterable[ServicePlan]) -> RenderableType:
    """Per service, what `orderctl topology apply` would change, each line saying what."""
    lines: list[RenderableType] = []
    for plan in plans:
        if not plan.deployed:
            lines.append(Text(f"{plan.service}: not on this broker (start it once)", style="dim"))
            continue
        if not plan.differs:
            lines.append(Text(f"{plan.service}: as the code declares it", style="green"))
        else:
            lines.append(Text(f"{plan.service}: differs", style="bold yellow"))
        for drifted in plan.drifted:
            lines.append(_change(f"migrate {_queue_figures(drifted.queue)}, arguments:"))
            lines += [Text(f"      {difference}") for difference in drifted.differences]
        for holding in plan.holding:
            lines.append(
                _change(f"finish migrating: {_queue_figures(holding)} left by an interrupted apply")
            )
        lines += [_change(f"declare missing queue {name}") for name in plan.missing_queues]
        lines += [_change(f"declare missing exchange {name}") for name in plan.missing_exchanges]
        lines += [
            _change(f"delete obsolete routing exchange {name}")
            for name in plan.obsolete_routing_exchanges
        ]
        lines += [
            _change(f"delete obsolete wait queue {_queue_figures(wait)} once empty")
            for wait in plan.obsolete_waits
        ]
        lines += [
            Text(f"  kept: {_queue_figures(queue)}, beyond the layout, still consumed")
            for queue in plan.extra_retry_queues
        ]
    return Group(*lines)


def _change(line: str) -> Text:
    return Text(f"  - {line}")


def _queue_figures(queue: ListedQueue) -> str:
    messages, consumers = plural(queue.messages, "message"), plural(queue.consumers, "consumer")
    return f"{queue.name} ({messages}, {consumers})"


def apply_summary(result: ApplyResult) -> RenderableType:
    lines = [Text(f"done: {plural(len(result.done), 'change')}", style="green")]
    lines += [Text(f"left: {line}", style="red") for line in result.left]
    return Group(*lines)
