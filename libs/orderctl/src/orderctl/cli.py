"""`orderctl`: parse the command line, run the async logic, render the result.

Exit codes: 0 done (or nothing to do), 1 something asked for is not there or failed (an
audit problem, a message id not in the DLQ, a replay not confirmed), 2 the command could
not run (bad usage, the broker or a service unreachable, unknown service or order).
"""

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Coroutine
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from servicekit.registry import SERVICE_NAMES, SERVICES, ServiceEntry
from servicekit.registry import service as service_entry

from . import credentials, provision, views
from .audit import AuditConfig, audit, url_variable
from .broker import (
    DEFAULT_AMQP_URL,
    QueueProbe,
    ServiceDepths,
    connect,
    service_depths,
    unknown_service,
)
from .dead_letters import (
    DEFAULT_LIMIT,
    DeadLetter,
    DeadLetterSession,
    Selection,
    dead_letter_session,
)
from .errors import CommandError
from .management import (
    MANAGEMENT_URL_VARIABLE,
    ManagementApi,
    default_management_url,
    management_api,
)
from .migration import QUIET_PERIOD, TopologyApplier
from .text import plural, redact
from .topology import ServicePlan, plan_service, retry_delays

T = TypeVar("T")

app = typer.Typer(
    help="Operate orderflow: dead letters, an end-to-end audit of orders, provisioning, "
    "operator tokens.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,  # locals hold URLs with passwords
)
dlq_app = typer.Typer(
    help="Inspect, replay and purge each service's dead-letter queue, `SERVICE.dlq`.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")
topology_app = typer.Typer(
    help="Compare each service's queues and exchanges on the broker with the code's, and "
    "make them match without losing a message.",
    no_args_is_help=True,
)
app.add_typer(topology_app, name="topology")
provision_app = typer.Typer(
    help="Print what gives each service its own database role and broker user, and no more.",
    no_args_is_help=True,
)
app.add_typer(provision_app, name="provision")

console = Console()
errors = Console(stderr=True)

AmqpUrl = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="RABBITMQ_URL",
        help="RabbitMQ URL, virtual host included.",
        show_default=redact(DEFAULT_AMQP_URL),
    ),
]
ServiceArg = Annotated[
    str, typer.Argument(metavar="SERVICE", help="The service whose DLQ to use, e.g. orders.")
]
ReasonOption = Annotated[
    str | None,
    typer.Option(
        "--reason", metavar="TEXT", help="Only messages whose failure reason contains TEXT."
    ),
]
RoutingKeyOption = Annotated[
    str | None,
    typer.Option(
        "--routing-key", metavar="KEY", help="Only messages first published under routing KEY."
    ),
]
LimitOption = Annotated[
    int, typer.Option("--limit", min=1, help="Read at most this many messages from the DLQ.")
]
ServiceUrlOption = Annotated[
    list[str] | None,
    typer.Option(
        "--service-url",
        metavar="SERVICE=URL",
        help="Where a service's HTTP API is, e.g. `orders=http://orders:8001`; repeat "
        f"for several. [env: {', '.join(url_variable(s) for s in SERVICES)}] "
        f"[default: {SERVICES[0].default_url} for {SERVICES[0].name}, "
        f"{', '.join(f'{s.default_port} {s.name}' for s in SERVICES[1:])}]",
        show_default=False,
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
ServicesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--service",
        "-s",
        help=f"Only this service; repeat for several. [default: {', '.join(SERVICE_NAMES)}]",
    ),
]
ManagementUrl = Annotated[
    str | None,
    typer.Option(
        "--management-url",
        envvar=MANAGEMENT_URL_VARIABLE,
        help="The RabbitMQ management API, with the virtual host as its path "
        "(`http://user:password@host:15672/orderflow`). [default: port 15672 of --url's "
        "host, with its user and virtual host]",
        show_default=False,
    ),
]


def _run(command: Coroutine[Any, Any, T]) -> T:
    """Run a command's async part; report a CommandError as one red line and exit 2."""
    for library in ("aio_pika", "aiormq"):  # their warnings repeat the errors we report
        logging.getLogger(library).setLevel(logging.CRITICAL)
    try:
        return asyncio.run(command)
    except CommandError as exc:
        _fail(exc)


def _fail(error: CommandError) -> NoReturn:
    errors.print(Text(str(error), style="red"), soft_wrap=True)
    raise typer.Exit(2) from None


@dlq_app.command("list")
def list_queues(
    services: ServicesOption = None,
    url: AmqpUrl = DEFAULT_AMQP_URL,
    management_url: ManagementUrl = None,
) -> None:
    """Dead letters, messages in retry (every wait and retry queue the broker holds) and work
    queue depth of each service."""
    management = management_url or default_management_url(url)
    depths = _run(_service_depths(url, management, tuple(services or SERVICE_NAMES)))
    found = [row for row in depths.values() if row is not None]
    missing = [service for service, row in depths.items() if row is None]
    if services and missing:
        _fail(unknown_service(missing[0]))
    if not found:
        _fail(CommandError(f"no dead-letter queue of {', '.join(missing)} on this broker"))
    console.print(views.depths_table(found))
    if missing:
        console.print(Text(f"not on this broker: {', '.join(missing)}", style="dim"))


async def _service_depths(
    url: str, management_url: str, services: tuple[str, ...]
) -> dict[str, ServiceDepths | None]:
    async with connect(url) as connection, management_api(management_url) as api:
        probe = QueueProbe(connection)
        return {service: await service_depths(probe, api, service) for service in services}


@dlq_app.command()
def show(
    service: ServiceArg,
    message_id: Annotated[
        str | None,
        typer.Argument(metavar="MESSAGE_ID", help="Show this message in full.", show_default=False),
    ] = None,
    reason: ReasonOption = None,
    routing_key: RoutingKeyOption = None,
    limit: LimitOption = DEFAULT_LIMIT,
    url: AmqpUrl = DEFAULT_AMQP_URL,
) -> None:
    """Dead letters by failure reason, or one message in full.

    Messages are only read: all of them stay in the DLQ.
    """
    ids = (message_id,) if message_id else ()
    selection = Selection(ids, reason, routing_key)
    raise typer.Exit(_run(_show(url, service, selection, limit)))


async def _show(url: str, service: str, selection: Selection, limit: int) -> int:
    async with connect(url) as connection, dead_letter_session(connection, service, limit) as dlq:
        chosen, code = _selected(dlq, selection)
        if selection.message_ids:
            for letter in chosen:
                console.print(views.letter_detail(letter))
        elif chosen:
            console.print(views.reasons_table(chosen, dlq.queue_name))
            console.print(views.letters_table(chosen, title="Messages"))
    return code


def _selected(dlq: DeadLetterSession, selection: Selection) -> tuple[list[DeadLetter], int]:
    """The letters to act on, and the exit code so far: 1 when some asked for is not there."""
    if not dlq.letters:
        console.print(f"{dlq.queue_name} is empty")
        return [], 0
    if dlq.left_unread:
        console.print(
            Text(
                f"read the first {plural(len(dlq.letters), 'message')} of {dlq.queue_name}; "
                f"{dlq.left_unread} more not read (see --limit)",
                style="yellow",
            )
        )
    missing = selection.missing_ids(dlq.letters)
    for message_id in missing:
        errors.print(Text(f"no message {message_id} in {dlq.queue_name}", style="red"))
    chosen = [letter for letter in dlq.letters if selection.matches(letter)]
    if not chosen and not missing:
        console.print(f"no message in {dlq.queue_name} matches")
    return chosen, 1 if missing or not chosen else 0


@dlq_app.command()
def replay(
    service: ServiceArg,
    message_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="MESSAGE_ID", help="Replay these messages.", show_default=False),
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Replay every message.")] = False,
    reason: ReasonOption = None,
    routing_key: RoutingKeyOption = None,
    limit: LimitOption = DEFAULT_LIMIT,
    yes: YesOption = False,
    url: AmqpUrl = DEFAULT_AMQP_URL,
) -> None:
    """Republish dead letters to the service's own work queue.

    Only this service gets them again; each leaves the DLQ once the broker has confirmed
    its republication, with its failure headers and broker history removed.
    """
    if message_ids and everything:
        raise typer.BadParameter("give message ids or --all, not both", param_hint="--all")
    if not (message_ids or everything or reason or routing_key):
        raise typer.BadParameter(
            "say what to replay: MESSAGE_ID..., --all, --reason or --routing-key",
            param_hint="MESSAGE_ID",
        )
    selection = Selection(tuple(message_ids or ()), reason, routing_key)
    raise typer.Exit(_run(_replay(url, service, selection, limit, yes)))


async def _replay(url: str, service: str, selection: Selection, limit: int, yes: bool) -> int:
    async with connect(url) as connection, dead_letter_session(connection, service, limit) as dlq:
        target = dlq.work_queue_name
        chosen, code = await _chosen_and_confirmed(
            dlq, selection, yes, f"to replay to {target}", f"Replay {{}} to {target}?"
        )
        if not chosen:
            return code
        result = await dlq.replay(chosen)
    console.print(views.replay_summary(result, dlq.work_queue_name))
    return 1 if result.failed else code


@dlq_app.command()
def purge(
    service: ServiceArg,
    message_ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="MESSAGE_ID", help="Delete only these messages.", show_default=False
        ),
    ] = None,
    reason: ReasonOption = None,
    routing_key: RoutingKeyOption = None,
    limit: LimitOption = DEFAULT_LIMIT,
    yes: YesOption = False,
    url: AmqpUrl = DEFAULT_AMQP_URL,
) -> None:
    """Delete dead letters for good: all of them, or those matching."""
    selection = Selection(tuple(message_ids or ()), reason, routing_key)
    raise typer.Exit(_run(_purge(url, service, selection, limit, yes)))


async def _purge(url: str, service: str, selection: Selection, limit: int, yes: bool) -> int:
    async with connect(url) as connection, dead_letter_session(connection, service, limit) as dlq:
        chosen, code = await _chosen_and_confirmed(
            dlq, selection, yes, f"to delete, of {len(dlq.letters)} read", "Delete {} for good?"
        )
        if not chosen:
            return code
        purged = await dlq.purge(chosen)
    console.print(Text(f"deleted {plural(purged, 'message')} from {dlq.queue_name}", style="green"))
    return code


async def _chosen_and_confirmed(
    dlq: DeadLetterSession, selection: Selection, yes: bool, title: str, question: str
) -> tuple[list[DeadLetter], int]:
    """The selected letters, shown and confirmed (`question` gets their count); none when
    nothing matched or the operator said no. And the exit code so far."""
    chosen, code = _selected(dlq, selection)
    if not chosen:
        return [], code
    count = plural(len(chosen), "message")
    console.print(views.letters_table(chosen, title=f"{count} {title}"))
    if not await _confirmed(question.format(count), yes):
        return [], 1
    return chosen, code


async def _confirmed(question: str, yes: bool) -> bool:
    if yes or await _ask(question):
        return True
    console.print("nothing done")
    return False


async def _ask(question: str) -> bool:
    """Ask in a daemon thread: the event loop keeps answering the broker's heartbeats while
    the messages wait, unacknowledged, for the operator, and Ctrl-C at the prompt ends the
    command at once (asyncio's own executor threads would be waited for)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()

    def prompt() -> None:
        try:
            deliver = partial(_settle, answer, typer.confirm(question))
        except Exception as exc:  # click's Abort at the end of input
            deliver = partial(_settle, answer, exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: Ctrl-C ended the command
            loop.call_soon_threadsafe(deliver)

    threading.Thread(target=prompt, name="confirm", daemon=True).start()
    return await answer


def _settle(future: asyncio.Future[bool], outcome: bool | Exception) -> None:
    if future.done():  # cancelled by Ctrl-C meanwhile
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


@topology_app.command("plan")
def topology_plan(
    services: ServicesOption = None,
    url: AmqpUrl = DEFAULT_AMQP_URL,
    management_url: ManagementUrl = None,
) -> None:
    """What differs between the code's topology and the broker's: exit 0 when nothing
    does, 1 when something does.

    The code's retry delays are each service's `<PREFIX>RETRY_DELAYS` (unset: the default),
    as the service itself reads them: set them as the release sets them.
    """
    plans = _run(_plans(_entries(services), management_url or default_management_url(url)))
    console.print(views.topology_plan(plans))
    raise typer.Exit(1 if any(plan.differs for plan in plans) else 0)


@topology_app.command("apply")
def topology_apply(
    services: ServicesOption = None,
    yes: YesOption = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=1, help="Seconds to wait for queues to drain, in all."),
    ] = 600.0,
    quiet_period: Annotated[
        float,
        typer.Option(
            "--quiet-period",
            min=0,
            help="Seconds the broker's statistics, which lag, must show a queue empty "
            "before it counts as empty.",
        ),
    ] = QUIET_PERIOD,
    url: AmqpUrl = DEFAULT_AMQP_URL,
    management_url: ManagementUrl = None,
) -> None:
    """Make the broker hold the code's topology, after showing the plan and asking.

    Declares what is missing; deletes obsolete routing exchanges, and obsolete wait queues
    once they are empty (never one holding a message); migrates each consuming queue held
    with other arguments through `<queue>.migrating`, every message kept. Safe to run again
    after an interruption. Exit 1 when something is left undone at the timeout.
    """
    management = management_url or default_management_url(url)
    raise typer.Exit(_run(_apply(_entries(services), url, management, yes, timeout, quiet_period)))


def _entries(services: list[str] | None) -> list[ServiceEntry]:
    try:
        return [service_entry(name) for name in services] if services else list(SERVICES)
    except KeyError as exc:
        raise typer.BadParameter(exc.args[0], param_hint="--service") from None


async def _plans(entries: list[ServiceEntry], management_url: str) -> list[ServicePlan]:
    async with management_api(management_url) as api:
        return await _plans_from(api, entries)


async def _plans_from(api: ManagementApi, entries: list[ServiceEntry]) -> list[ServicePlan]:
    return [
        plan_service(entry.name, retry_delays(entry), await api.listing(f"{entry.name}."))
        for entry in entries
    ]


async def _apply(
    entries: list[ServiceEntry],
    url: str,
    management_url: str,
    yes: bool,
    timeout: float,
    quiet_period: float,
) -> int:
    async with connect(url) as connection, management_api(management_url) as api:
        plans = [plan for plan in await _plans_from(api, entries) if plan.differs]
        console.print(views.topology_plan(plans))
        if not plans:
            console.print("nothing to do")
            return 0
        if not await _confirmed("Apply these changes?", yes):
            return 1
        applier = TopologyApplier(
            connection, api, timeout=timeout, quiet_period=quiet_period, say=console.print
        )
        for plan in plans:
            await applier.apply(plan)
    console.print(views.apply_summary(applier.result))
    return 1 if applier.result.left else 0


PrefixOption = Annotated[
    str, typer.Option("--prefix", help="Put this before every role, database and user name.")
]


@provision_app.command("postgres")
def provision_postgres(prefix: PrefixOption = "") -> None:
    """Print a psql script that gives each service a role owning its database, which no
    other role may connect to. Safe to run again. Run it as a superuser, with each
    `<PREFIX>DB_PASSWORD` set (`ORDERS_DB_PASSWORD`, ...):
    `orderctl provision postgres | psql postgresql://postgres@host/postgres`."""
    typer.echo(provision.postgres_script(prefix), nl=False)


@provision_app.command("rabbitmq")
def provision_rabbitmq(
    vhost: Annotated[str, typer.Option("--vhost", help="The system's virtual host.")] = (
        provision.VHOST
    ),
    prefix: PrefixOption = "",
    placeholders: Annotated[
        bool,
        typer.Option(
            "--placeholders", help="Write `${VARIABLE}` for each password, not its value."
        ),
    ] = False,
) -> None:
    """Print RabbitMQ definitions: the virtual host, the `events` exchange, and a user per
    service allowed only its own queues and exchanges (passwords from
    `<PREFIX>RABBITMQ_PASSWORD`, the operator's from `RABBITMQ_ADMIN_PASSWORD`). Load them
    with `rabbitmqctl import_definitions FILE`."""
    password = provision.placeholder if placeholders else provision.from_environment
    try:
        definitions = provision.rabbitmq_definitions(password, vhost=vhost, prefix=prefix)
    except CommandError as exc:
        _fail(exc)
    typer.echo(provision.render_definitions(definitions), nl=False)


@app.command("token")
def token_command(
    private_key: Annotated[
        Path,
        typer.Option(
            "--private-key",
            metavar="PATH",
            envvar="ORDERCTL_PRIVATE_KEY",
            help="The operator's Ed25519 private key (PEM, unencrypted).",
            show_default=False,
        ),
    ],
    ttl: Annotated[
        str, typer.Option("--ttl", help="How long the token is valid: 90s, 15m, 8h, 7d.")
    ] = "1h",
    subject: Annotated[
        str, typer.Option("--subject", help="Whose token it is (its `sub`), e.g. your name.")
    ] = "operator",
) -> None:
    """Print an operator token for the services' operator routes (stock, reservations,
    shipments, emails, `/audit`), which every service holding the public key accepts:
    `export ORDERCTL_TOKEN=$(orderctl token --private-key operator.key)`."""
    try:
        lifetime = credentials.duration(ttl)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ttl") from None
    try:
        typer.echo(credentials.operator_token(private_key, lifetime, subject))
    except CommandError as exc:
        _fail(exc)


@app.command("audit", epilog=views.expectations_markdown())
def audit_command(
    order_id: Annotated[
        str | None,
        typer.Argument(
            metavar="ORDER_ID",
            help="Audit only this order (outbox and queue checks still cover every service).",
            show_default=False,
        ),
    ] = None,
    service_urls: ServiceUrlOption = None,
    url: AmqpUrl = DEFAULT_AMQP_URL,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check every order, outbox and queue of the system; exit 1 on any problem.

    Every order must have gone through every service exactly once, with what each service
    holds matching the order's status; every outbox must be drained, and no message may
    wait in a retry or dead-letter queue. The services' audit routes are operator routes:
    set `ORDERCTL_TOKEN` (`orderctl token`) for services that check tokens.
    """
    config = AuditConfig.from_env(service_urls=_service_urls(service_urls or []), amqp_url=url)
    report = _run(audit(config, order_id))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        console.print(views.audit_summary(report))
        if report.problems:
            console.print(views.problems_table(report))
        else:
            console.print(Text("no problems found", style="green"))
    raise typer.Exit(0 if report.ok else 1)


CONSOLE_SHUTDOWN_SECONDS = 3
"""How long a stopping console waits for open pages' event streams before it closes them."""


@app.command("console")
def console_command(
    host: Annotated[
        str, typer.Option("--host", help="The interface to listen on; the loopback by default.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="The port to listen on.")] = 8000,
    service_urls: ServiceUrlOption = None,
    trace_url: Annotated[
        str | None,
        typer.Option(
            "--trace-url",
            metavar="URL",
            help="A trace UI's page for one order, e.g. `https://jaeger/trace/{trace_id}` "
            "(shown when the order carries a trace id) or a search by `{order_id}`.",
        ),
    ] = None,
    url: AmqpUrl = DEFAULT_AMQP_URL,
) -> None:
    """Serve the operator console: orders live, one order across every service, dead letters
    (replay, purge), queues and outboxes, at http://HOST:PORT.

    It asks the services over HTTP with `ORDERCTL_TOKEN`, as `orderctl audit` does, and reads
    RabbitMQ at `--url`. With `OPERATOR_TOKEN_PUBLIC_KEY` set (required when
    `ENVIRONMENT=production`) every page asks for an operator token; without it the console
    is open, and listens on the loopback only.
    """
    # The web stack loads for this command alone: the others start as fast as before.
    import uvicorn

    from servicekit.cli import exit_cleanly_after_graceful_shutdown

    from .console.app import create_app
    from .console.config import ConsoleConfig

    try:
        config = ConsoleConfig.from_env(
            service_urls=_service_urls(service_urls or []),
            amqp_url=url,
            trace_url=trace_url,
            host=host,
        )
    except CommandError as exc:
        _fail(exc)
    for library in ("aio_pika", "aiormq"):  # their warnings repeat the errors we report
        logging.getLogger(library).setLevel(logging.CRITICAL)
    console.print(f"orderctl console at http://{host}:{port}", soft_wrap=True)
    exit_cleanly_after_graceful_shutdown()  # SIGTERM ends it with 0, as it does a service
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        timeout_graceful_shutdown=CONSOLE_SHUTDOWN_SECONDS,
        log_level="info",
    )


def _service_urls(options: list[str]) -> dict[str, str]:
    """`--service-url SERVICE=URL` options by service; a usage error for a bad one."""
    urls = {}
    for option in options:
        service, equals, url = option.partition("=")
        if not (equals and url) or service not in SERVICE_NAMES:
            raise typer.BadParameter(
                f"{option!r}: expected SERVICE=URL, SERVICE one of {', '.join(SERVICE_NAMES)}",
                param_hint="--service-url",
            )
        urls[service] = url
    return urls
