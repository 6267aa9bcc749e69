"""The console's composition root: `create_app(config)` builds its HTTP client to the
services, its broker with the live queue, and its pages."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs, urlencode
from uuid import UUID

import httpx
import jinja2
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from faststream.rabbit import RabbitBroker

from contracts import ALL_EVENTS
from contracts.audit import OutboxAudit
from servicekit.live import FellBehind, LiveHub, LiveUnavailable, subscribe_live
from servicekit.registry import SERVICE_NAMES

from ..audit import HTTP_TIMEOUT, AuditConfig, ServiceApis
from ..broker import QueueProbe, ServiceQueues, connect, service_queues
from ..credentials import authorization
from ..dead_letters import (
    DeadLetter,
    ReasonGroup,
    ReplayResult,
    Selection,
    by_reason,
    dead_letter_session,
)
from ..errors import CommandError
from ..management import management_api
from ..text import header_text, plural, when
from . import security
from .config import ConsoleConfig

log = logging.getLogger("orderctl.console")

HERE = Path(__file__).parent
ORDER_EVENT_KEYS = tuple(
    event.routing_key() for event in ALL_EVENTS if event.TYPE.startswith("order.")
)
"""What the live views follow: every change of an order's status is announced as one."""
LATEST_ORDERS = 50
LETTERS_READ = 1000
"""Dead letters read from each queue for a page; the rest are counted, not shown."""
RECONNECT_MILLISECONDS = 2000
"""How soon a browser reconnects a stream that ended (the console restarted, say)."""

T = TypeVar("T")


class Action(StrEnum):
    REPLAY = "replay"
    PURGE = "purge"


@dataclass
class Part:
    """One service's answer on a page, or why there is none: one service down leaves the
    others' parts readable."""

    value: Any = None
    error: str | None = None


async def _part(call: Awaitable[T]) -> Part:
    try:
        return Part(await call)
    except CommandError as exc:
        return Part(error=str(exc))


@dataclass
class DeadLetterQueue:
    service: str
    queue: str = ""
    work_queue: str = ""
    groups: list[ReasonGroup] = field(default_factory=list)
    left_unread: int = 0
    error: str | None = None

    @property
    def count(self) -> int:
        return sum(len(group.letters) for group in self.groups) + self.left_unread


def create_app(config: ConsoleConfig) -> FastAPI:
    templates = Jinja2Templates(
        env=jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,  # every value shown comes from a message or a service
        )
    )
    templates.env.filters["when"] = _when
    templates.env.filters["header_text"] = header_text
    templates.env.globals.update(plural=plural, open_console=config.operator_key is None)
    hub = LiveHub()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        broker = RabbitBroker(
            config.services.amqp_url,
            apply_types=False,
            client_properties={"connection_name": "orderctl-console"},
            logger=logging.getLogger("orderctl.console.broker"),
        )
        subscribe_live(broker, hub, owner="orderctl", routing_keys=ORDER_EVENT_KEYS)
        headers = authorization(config.services.token)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, headers=headers) as client:
            app.state.services = ServiceApis(client, config.services.service_urls)
            await broker.start()
            try:
                yield
            finally:
                await broker.stop()

    app = FastAPI(title="orderctl console", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.config = config
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def page(request: Request, name: str, code: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, context, status_code=code)

    @app.exception_handler(security.SignInRequired)
    async def sign_in(request: Request, exc: security.SignInRequired) -> Response:
        return RedirectResponse(exc.location, status.HTTP_303_SEE_OTHER)

    @app.exception_handler(CommandError)
    async def unavailable(request: Request, exc: CommandError) -> Response:
        return page(request, "error.html", status.HTTP_502_BAD_GATEWAY, error=str(exc))

    public = APIRouter()

    @public.get("/health/live")
    async def alive() -> dict[str, str]:
        return {"status": "ok"}

    @public.get("/health/ready")
    async def ready() -> dict[str, str]:
        """Answered once the lifespan has started: the broker and its live queue are up."""
        return {"status": "ready"}

    @public.get("/login")
    async def login_form(request: Request, next: str | None = None) -> HTMLResponse:
        return page(request, "login.html", next=security.safe_next(next))

    @public.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        next_path = security.safe_next(form.get("next"))
        key = config.operator_key
        if key is None:
            return RedirectResponse(next_path, status.HTTP_303_SEE_OTHER)
        claims = security.verified_claims(key, form.get("token", "").strip())
        if claims is None:
            log.info("console login refused: not a valid operator token")
            error = "That is not a valid operator token, or it has expired."
            return page(request, "login.html", 401, next=next_path, error=error)
        response = RedirectResponse(next_path, status.HTTP_303_SEE_OTHER)
        response.set_cookie(
            security.COOKIE,
            form["token"].strip(),
            max_age=security.cookie_lifetime(claims),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        log.info("console login: %s", claims.get("sub"))
        return response

    @public.post("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
        response.delete_cookie(security.COOKIE)
        return response

    app.include_router(public)
    pages = APIRouter(dependencies=[Depends(security.require_operator)])

    def services(request: Request) -> ServiceApis:
        return request.app.state.services

    @pages.get("/", response_class=HTMLResponse)
    async def latest_orders(request: Request) -> HTMLResponse:
        return page(request, "orders.html", orders=await _latest(services(request)))

    @pages.get("/parts/orders", response_class=HTMLResponse)
    async def latest_orders_part(request: Request) -> HTMLResponse:
        return page(request, "orders_table.html", orders=await _latest(services(request)))

    @pages.get("/orders/{order_id}", response_class=HTMLResponse)
    async def order_page(request: Request, order_id: UUID) -> HTMLResponse:
        life = await _life(services(request), order_id)
        return page(request, "order.html", **life, trace_link=config.trace_link(life["order"]))

    @pages.get("/parts/orders/{order_id}", response_class=HTMLResponse)
    async def order_part(request: Request, order_id: UUID) -> HTMLResponse:
        return page(request, "order_life.html", **await _life(services(request), order_id))

    @pages.get("/live", response_class=EventSourceResponse)
    async def live(order_id: UUID | None = None) -> AsyncIterator[ServerSentEvent]:
        """Server-sent events: `order` for each order event (about `order_id` alone, if
        given), each `{order_id, event_type}`. The first, `listening`, comes once the
        events are followed: a page that reads the current state then misses nothing."""
        try:
            async with hub.listen(order_id) as events:
                yield ServerSentEvent(event="listening", data={}, retry=RECONNECT_MILLISECONDS)
                while True:
                    try:
                        event = await events.get()
                    except FellBehind:  # the browser reconnects and reads the state again
                        return
                    data = {"order_id": str(event.order_id), "event_type": event.event_type}
                    yield ServerSentEvent(event="order", data=data)
        except LiveUnavailable as exc:  # the browser tries again after its retry delay
            log.warning("live view not served: %s", exc)

    @pages.get("/dead-letters", response_class=HTMLResponse)
    async def dead_letters(
        request: Request,
        action: Action | None = None,
        service: str | None = None,
        done: int = 0,
        failed: int = 0,
    ) -> HTMLResponse:
        queues = await _dead_letter_queues(config.services.amqp_url)
        notice = _notice(action, service, done, failed) if action and service else None
        return page(request, "dead_letters.html", queues=queues, notice=notice)

    @pages.get("/dead-letters/{service}/messages/{message_id}", response_class=HTMLResponse)
    async def dead_letter(request: Request, service: str, message_id: str) -> HTMLResponse:
        _known(service)
        selection = Selection((message_id,))
        async with (
            connect(config.services.amqp_url) as connection,
            dead_letter_session(connection, service, LETTERS_READ) as dlq,
        ):
            letter = next((ltr for ltr in dlq.letters if selection.matches(ltr)), None)
            if letter is None:
                raise HTTPException(404, f"no message {message_id} in {dlq.queue_name}")
            return page(request, "dead_letter.html", service=service, **_shown(letter))

    @pages.get("/dead-letters/{service}/{action}", response_class=HTMLResponse)
    async def confirm(
        request: Request,
        service: str,
        action: Action,
        reason: Annotated[str | None, Query()] = None,
        message_id: Annotated[str | None, Query()] = None,
    ) -> HTMLResponse:
        """The confirmation step: what the action would touch, and the button that does it."""
        _known(service)
        selection = _selection(reason, message_id)
        async with (
            connect(config.services.amqp_url) as connection,
            dead_letter_session(connection, service, LETTERS_READ) as dlq,
        ):
            chosen = [letter for letter in dlq.letters if selection.matches(letter)]
            return page(
                request,
                "confirm.html",
                service=service,
                action=action,
                reason=reason,
                message_id=message_id,
                letters=chosen,
                queue=dlq.queue_name,
                work_queue=dlq.work_queue_name,
            )

    @pages.post("/dead-letters/{service}/{action}")
    async def act(request: Request, service: str, action: Action) -> Response:
        """Replay (to the service's own work queue only) or purge, as `orderctl dlq` does;
        then back to the dead letters, with what was done."""
        _known(service)
        form = await _form(request)
        selection = _selection(form.get("reason"), form.get("message_id"))
        async with (
            connect(config.services.amqp_url) as connection,
            dead_letter_session(connection, service, LETTERS_READ) as dlq,
        ):
            chosen = [letter for letter in dlq.letters if selection.matches(letter)]
            if action is Action.REPLAY:
                result: ReplayResult = await dlq.replay(chosen)
                done, failed = len(result.replayed), len(result.failed)
            else:
                done, failed = await dlq.purge(chosen), 0
        log.info("console %s of %d message(s) from %s", action, done, dlq.queue_name)
        query = urlencode({"action": action, "service": service, "done": done, "failed": failed})
        return RedirectResponse(f"/dead-letters?{query}#{service}", status.HTTP_303_SEE_OTHER)

    @pages.get("/queues", response_class=HTMLResponse)
    async def queues(request: Request) -> HTMLResponse:
        apis = services(request)
        outboxes = await asyncio.gather(
            *(_part(apis.get(name, "/audit/outbox", OutboxAudit)) for name in SERVICE_NAMES)
        )
        return page(
            request,
            "queues.html",
            queues=await _queues(config.services),
            outboxes=dict(zip(SERVICE_NAMES, outboxes, strict=True)),
        )

    app.include_router(pages)
    return app


async def _latest(services: ServiceApis) -> list[dict[str, Any]]:
    return await services.read("orders", "/orders", {"limit": str(LATEST_ORDERS)}) or []


async def _life(services: ServiceApis, order_id: UUID) -> dict[str, Any]:
    """What each service holds about one order; 404 when orders does not know it."""
    order = await services.read("orders", f"/orders/{order_id}")
    if order is None:
        raise HTTPException(404, f"no order {order_id}")
    about = {"order_id": str(order_id)}
    reservation, shipments, emails = await asyncio.gather(
        _part(services.read("inventory", f"/reservations/{order_id}")),
        _part(services.read("shipping", "/shipments", about)),
        _part(services.read("email", "/emails", about)),
    )
    return {"order": order, "reservation": reservation, "shipments": shipments, "emails": emails}


async def _dead_letter_queues(amqp_url: str) -> list[DeadLetterQueue]:
    found = []
    async with connect(amqp_url) as connection:
        for service in SERVICE_NAMES:
            try:
                async with dead_letter_session(connection, service, LETTERS_READ) as dlq:
                    found.append(
                        DeadLetterQueue(
                            service,
                            dlq.queue_name,
                            dlq.work_queue_name,
                            by_reason(dlq.letters),
                            dlq.left_unread,
                        )
                    )
            except CommandError as exc:
                found.append(DeadLetterQueue(service, error=str(exc)))
    return found


async def _queues(config: AuditConfig) -> dict[str, ServiceQueues | None]:
    async with connect(config.amqp_url) as connection, management_api(config.management) as api:
        probe = QueueProbe(connection)
        return {service: await service_queues(probe, api, service) for service in SERVICE_NAMES}


def _known(service: str) -> None:
    if service not in SERVICE_NAMES:
        raise HTTPException(404, f"unknown service {service!r}")


def _selection(reason: str | None, message_id: str | None) -> Selection:
    """One message, or those failed for exactly this reason (a group on the page)."""
    return Selection((message_id,) if message_id else (), reason or None)


def _notice(action: Action, service: str, done: int, failed: int) -> str:
    did = "replayed" if action is Action.REPLAY else "deleted"
    where = f"to {service}.work" if action is Action.REPLAY else f"from {service}.dlq"
    notice = f"{did} {plural(done, 'message')} {where}"
    return f"{notice}; {failed} not replayed, left in the DLQ" if failed else notice


def _shown(letter: DeadLetter) -> dict[str, Any]:
    """What the message page shows: properties, headers, the body as JSON or as text."""
    event = letter.event
    return {
        "letter": letter,
        "headers": sorted(letter.headers.items()),
        "body": json.dumps(event, indent=2) if event is not None else None,
        "raw_body": letter.body.decode("utf-8", "backslashreplace"),
    }


def _when(value: datetime | str | None) -> str:
    """A time from a service's JSON (ISO 8601) or from a header, as the CLI prints it."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return when(value)


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields, first value of each (the console's forms post no files)."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}
