"""The end-to-end audit: did every order go through every service exactly once, and does
what each service holds match where the order's life ended (`EXPECTED`)?

It asks each service over HTTP for what it holds (its `/audit/...` routes, answered in the
vocabulary of `contracts.audit`) and reads the queues on RabbitMQ, so it also finds what no
single service can see: a missing or doubled effect, an event stuck in an outbox, a message
waiting in a retry queue or dead-lettered. It never reads a service's tables.
"""

import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from contracts.api import MAX_PAGE_SIZE
from contracts.audit import (
    EmailKind,
    EmailsAudit,
    OrderAudit,
    OrderIds,
    OrdersAudit,
    OrderStatus,
    OutboxAudit,
    ReservationsAudit,
    ReservationStatus,
    ShipmentsAudit,
    ShipmentStatus,
)
from servicekit.registry import SERVICE_NAMES, SERVICES, ServiceEntry
from servicekit.topology import dead_letter_queue_name

from .broker import DEFAULT_AMQP_URL, QueueProbe, connect, service_depths
from .credentials import TOKEN_VARIABLE, authorization
from .errors import CommandError
from .management import MANAGEMENT_URL_VARIABLE, default_management_url, management_api
from .text import plural, redact

HTTP_TIMEOUT = 30.0
"""Seconds to wait for a service's answer (about a page of orders at most)."""

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Expected:
    """What the other services hold for an order in one status: the reservation statuses
    and shipment statuses allowed, and the exact set of email kinds sent. None: the order
    is not settled, so only the counts are checked."""

    reservation: Set[ReservationStatus] | None = None
    shipment: Set[ShipmentStatus] | None = None
    emails: Set[EmailKind] | None = None

    @property
    def settled(self) -> bool:
        return self.reservation is not None


UNSETTLED = Expected()
EXPECTED: Mapping[OrderStatus, Expected] = {
    # order status: Expected(reservation, shipment, emails)
    OrderStatus.PENDING: UNSETTLED,
    OrderStatus.CONFIRMED: Expected(
        {ReservationStatus.RESERVED}, {ShipmentStatus.READY}, {EmailKind.ORDER_CONFIRMATION}
    ),
    OrderStatus.REJECTED: Expected(
        {ReservationStatus.REJECTED}, {ShipmentStatus.CANCELLED}, {EmailKind.ORDER_REJECTION}
    ),
    OrderStatus.SHIPPED: Expected(
        {ReservationStatus.FULFILLED},
        {ShipmentStatus.DISPATCHED},
        {EmailKind.ORDER_CONFIRMATION, EmailKind.SHIPMENT_DISPATCHED},
    ),
    OrderStatus.CANCELLED: Expected(
        {ReservationStatus.RELEASED, ReservationStatus.REJECTED},
        {ShipmentStatus.CANCELLED},
        {EmailKind.ORDER_CANCELLATION},
    ),
}
"""By the order's status in orders. Besides, an order that was ever confirmed (its history
says so) got its confirmation email, whatever came next: a cancelled one then has two."""

WHY = {
    ("reservation", OrderStatus.CANCELLED, ReservationStatus.RESERVED): "stock never released",
    ("shipment", OrderStatus.CONFIRMED, ShipmentStatus.DISPATCHED): (
        "orders has not heard of the dispatch yet"
    ),
    ("shipment", OrderStatus.CANCELLED, ShipmentStatus.DISPATCHED): (
        "parcel left after the order was cancelled"
    ),
}
"""What a mismatch means, for the ones an operator should read about."""


class ProblemKind(StrEnum):
    """One per check; the value is stable for `--json` consumers."""

    ORDER_PENDING = "order_pending"
    RESERVATION_COUNT = "reservation_count"
    RESERVATION_STATUS = "reservation_status"
    SHIPMENT_COUNT = "shipment_count"
    SHIPMENT_STATUS = "shipment_status"
    EMAILS = "emails"
    OUTBOX_UNDRAINED = "outbox_undrained"
    QUEUES_MISSING = "queues_missing"
    DEAD_LETTERS = "dead_letters"
    MESSAGES_IN_RETRY = "messages_in_retry"

    @property
    def check(self) -> str:
        """What holds when there is no problem of this kind."""
        return _CHECKS[self]

    @property
    def per_order(self) -> bool:
        return self in _ORDER_KINDS


_CHECKS = {
    ProblemKind.ORDER_PENDING: "order is settled, not pending",
    ProblemKind.RESERVATION_COUNT: "one stock reservation per order (at most one while pending)",
    ProblemKind.RESERVATION_STATUS: "reservation status matches order status",
    ProblemKind.SHIPMENT_COUNT: "exactly one shipment per order",
    ProblemKind.SHIPMENT_STATUS: "shipment status matches order status",
    ProblemKind.EMAILS: "emails sent match order status and history, each kind at most once",
    ProblemKind.OUTBOX_UNDRAINED: "every outbox event published",
    ProblemKind.QUEUES_MISSING: "service queues exist on the broker",
    ProblemKind.DEAD_LETTERS: "dead-letter queue empty",
    ProblemKind.MESSAGES_IN_RETRY: "wait and retry queues empty",
}
_ORDER_KINDS = frozenset(
    {
        ProblemKind.ORDER_PENDING,
        ProblemKind.RESERVATION_COUNT,
        ProblemKind.RESERVATION_STATUS,
        ProblemKind.SHIPMENT_COUNT,
        ProblemKind.SHIPMENT_STATUS,
        ProblemKind.EMAILS,
    }
)


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    subject: str
    """The order id, or the service, the problem is about."""
    detail: str


@dataclass(frozen=True)
class AuditReport:
    orders_checked: int
    services: tuple[str, ...]
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self, kind: ProblemKind) -> int:
        return sum(1 for problem in self.problems if problem.kind is kind)

    def as_dict(self) -> dict[str, Any]:
        counts = Counter(problem.kind.value for problem in self.problems)
        return {
            "ok": self.ok,
            "orders_checked": self.orders_checked,
            "services": list(self.services),
            "problem_counts": {kind.value: counts[kind.value] for kind in ProblemKind},
            "problems": [
                {"kind": p.kind.value, "subject": p.subject, "detail": p.detail}
                for p in self.problems
            ],
        }


@dataclass(frozen=True)
class AuditConfig:
    service_urls: Mapping[str, str]
    """Each service's HTTP API, by service name."""
    amqp_url: str = DEFAULT_AMQP_URL
    page_size: int = MAX_PAGE_SIZE
    """Orders asked of orders in one request, and reported on by each other service in one."""
    token: str | None = None
    """The operator token (`orderctl token`) sent to every service; None: no token is sent."""
    management_url: str | None = None
    """The RabbitMQ management API, which lists each service's queues; None: port 15672 of
    the AMQP URL's host, with its user and virtual host."""

    @property
    def management(self) -> str:
        return self.management_url or default_management_url(self.amqp_url)

    @classmethod
    def from_env(
        cls,
        *,
        service_urls: Mapping[str, str] | None = None,
        amqp_url: str | None = None,
        token: str | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> "AuditConfig":
        """Each service's URL from `service_urls`, else from its `<SERVICE>_URL`
        (`ORDERS_URL`, ...), else the registry's default; the token from `token`, else
        `ORDERCTL_TOKEN`; the management API from `RABBITMQ_MANAGEMENT_URL`. CommandError
        for a name that is not a service."""
        explicit = dict(service_urls or {})
        if unknown := sorted(explicit.keys() - set(SERVICE_NAMES)):
            raise CommandError(f"unknown service {unknown[0]!r}; known: {', '.join(SERVICE_NAMES)}")
        urls = {
            entry.name: explicit.get(entry.name)
            or env.get(url_variable(entry))
            or entry.default_url
            for entry in SERVICES
        }
        return cls(
            urls,
            amqp_url or env.get("RABBITMQ_URL") or DEFAULT_AMQP_URL,
            token=token or env.get(TOKEN_VARIABLE),
            management_url=env.get(MANAGEMENT_URL_VARIABLE),
        )


def url_variable(entry: ServiceEntry) -> str:
    """The environment variable that tells the audit where a service is, e.g. `ORDERS_URL`."""
    return f"{entry.env_prefix}URL"


async def audit(config: AuditConfig, order_id: str | None = None) -> AuditReport:
    """Check every order (or only `order_id`), every outbox and every queue of the system.

    Raises CommandError for what prevents the audit itself: a service or the broker not
    answering, or an `order_id` the orders service does not know.
    """
    only = None if order_id is None else _order_id(order_id)
    checked = 0
    problems: list[Problem] = []
    async with httpx.AsyncClient(
        timeout=HTTP_TIMEOUT, headers=authorization(config.token)
    ) as client:
        services = ServiceApis(client, config.service_urls)
        async for orders in _orders_a_page_at_a_time(services, config.page_size, only):
            checked += len(orders)
            problems += await _problems_of(services, orders)
        outboxes = [
            await services.get(service, "/audit/outbox", OutboxAudit)
            for service in config.service_urls
        ]
    problems += [problem for outbox in outboxes for problem in _outbox_problems(outbox)]
    problems += await _queue_problems(config, tuple(config.service_urls))
    return AuditReport(checked, tuple(config.service_urls), problems)


async def _orders_a_page_at_a_time(
    services: "ServiceApis", page_size: int, only: uuid.UUID | None
) -> AsyncIterator[list[OrderAudit]]:
    """Every order orders holds, oldest first, in pages of `page_size`; or only `only`."""
    if only is not None:
        params = {"order_id": str(only)}
        yield (await services.get("orders", "/audit/orders", OrdersAudit, params)).orders
        return
    params = {"limit": str(page_size)}
    while True:
        page = (await services.get("orders", "/audit/orders", OrdersAudit, params)).orders
        yield page
        if len(page) < page_size:
            return
        params["after"] = str(page[-1].order_id)


async def _problems_of(services: "ServiceApis", orders: list[OrderAudit]) -> list[Problem]:
    """What is wrong with each of these orders, from what every other service holds."""
    asked = OrderIds(order_ids=[order.order_id for order in orders])
    reservations = await services.post("inventory", asked, ReservationsAudit)
    shipments = await services.post("shipping", asked, ShipmentsAudit)
    emails = await services.post("email", asked, EmailsAudit)
    facts = [
        OrderFacts(
            order.order_id,
            order.status,
            order.was_confirmed,
            reservations.reservations.get(order.order_id, []),
            shipments.shipments.get(order.order_id, []),
            emails.emails.get(order.order_id, []),
        )
        for order in orders
    ]
    return [problem for order in facts for problem in order_problems(order)]


def _order_id(order_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(order_id)
    except ValueError as exc:
        raise CommandError(f"{order_id!r} is not an order id (a UUID)") from exc


class ServiceApis:
    """The services' audit routes over HTTP, each answer read into its `contracts.audit`
    model. Whatever keeps a service from answering is a CommandError naming it."""

    def __init__(self, client: httpx.AsyncClient, urls: Mapping[str, str]) -> None:
        self._client = client
        self._urls = urls

    async def get(
        self, service: str, path: str, model: type[M], params: Mapping[str, str] | None = None
    ) -> M:
        return await self._call(service, "GET", path, model, params=params)

    async def post(self, service: str, order_ids: OrderIds, model: type[M]) -> M:
        """What `service` holds about each of these orders: its `POST /audit/orders`."""
        body = order_ids.model_dump(mode="json")
        return await self._call(service, "POST", "/audit/orders", model, json=body)

    async def read(
        self, service: str, path: str, params: Mapping[str, str] | None = None
    ) -> Any | None:
        """The JSON a service answers to `GET path`, as it is; None for a 404 (nothing there
        yet, such as the reservation of an order inventory has not heard of)."""
        response = await self._request(service, "GET", path, missing_ok=True, params=params)
        return None if response.status_code == 404 else response.json()

    async def _call(
        self, service: str, method: str, path: str, model: type[M], **request: Any
    ) -> M:
        response = await self._request(service, method, path, **request)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise CommandError(
                f"{self._where(service)} answered {method} {path} with what the audit cannot "
                f"read: {'.'.join(map(str, error['loc']))}: {error['msg']}"
            ) from exc

    async def _request(
        self, service: str, method: str, path: str, missing_ok: bool = False, **request: Any
    ) -> httpx.Response:
        where = self._where(service)
        try:
            response = await self._client.request(
                method, self._urls[service].rstrip("/") + path, **request
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # refused, timed out, not HTTP
            raise CommandError(f"cannot reach {where}: {str(exc) or type(exc).__name__}") from exc
        if response.is_error and not (missing_ok and response.status_code == 404):
            raise CommandError(
                f"{where} answered {response.status_code} to {method} {path}: {_detail(response)}"
            )
        return response

    def _where(self, service: str) -> str:
        return f"the {service} service at {redact(self._urls[service].rstrip('/'))}"


def _detail(response: httpx.Response) -> str:
    """What the service said was wrong: FastAPI's `detail`, else the start of the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):  # not JSON, or not an object
        detail = None
    if detail == "Not Found":  # FastAPI's answer for a route it does not have
        return "no such route (is the service older than its audit API?)"
    if isinstance(detail, str):
        return detail
    return response.text[:200] or response.reason_phrase


@dataclass(frozen=True)
class OrderFacts:
    """What the four services hold about one order, in `contracts.audit`'s values."""

    order_id: uuid.UUID
    status: str
    was_confirmed: bool
    """Its history has an event that moved it to confirmed."""
    reservations: Sequence[str]
    """The status of each of its reservations."""
    shipments: Sequence[str]
    """The status of each of its shipments."""
    emails: Sequence[str]
    """The kind of each email sent about it."""


def order_problems(order: OrderFacts) -> list[Problem]:
    """An order against `EXPECTED` for its status. A pending order gets the pending problem
    and only the checks that do not depend on its outcome: at most one reservation, exactly
    one shipment (shipping prepares one for every order it hears of), no email twice."""
    expected = EXPECTED.get(order.status, UNSETTLED)
    reservations, shipments = order.reservations, order.shipments
    found: list[tuple[ProblemKind, str]] = []
    if not expected.settled:
        found.append((ProblemKind.ORDER_PENDING, f"order is still {order.status}"))
    if len(reservations) > 1 or (expected.settled and not reservations):
        wanted = "1" if expected.settled else "at most 1"
        count = plural(len(reservations), "reservation")
        found.append((ProblemKind.RESERVATION_COUNT, f"{count}, expected {wanted}"))
    elif expected.reservation is not None and reservations[0] not in expected.reservation:
        detail = _mismatch("reservation", reservations[0], order.status, expected.reservation)
        found.append((ProblemKind.RESERVATION_STATUS, detail))
    if len(shipments) != 1:
        count = plural(len(shipments), "shipment")
        found.append((ProblemKind.SHIPMENT_COUNT, f"{count}, expected 1"))
    elif expected.shipment is not None and shipments[0] not in expected.shipment:
        detail = _mismatch("shipment", shipments[0], order.status, expected.shipment)
        found.append((ProblemKind.SHIPMENT_STATUS, detail))
    emails = expected.emails
    if emails is not None and order.was_confirmed:
        emails = emails | {EmailKind.ORDER_CONFIRMATION}
    if differences := _email_differences(Counter(order.emails), emails):
        found.append((ProblemKind.EMAILS, differences))
    return [Problem(kind, str(order.order_id), detail) for kind, detail in found]


def _mismatch(what: str, status: str, order_status: str, allowed: Set[str]) -> str:
    """E.g. `shipment is dispatched, expected cancelled for a cancelled order: parcel left
    after the order was cancelled`."""
    detail = (
        f"{what} is {status}, expected {' or '.join(sorted(allowed))} for a {order_status} order"
    )
    why = WHY.get((what, order_status, status))
    return f"{detail}: {why}" if why else detail


def _email_differences(sent: Counter[str], expected: Set[str] | None) -> str:
    """The kinds missing and those sent too often, e.g. `missing order_rejection; 2 x
    order_confirmation`; "" when they match. None expected: only each kind at most once."""
    missing = sorted(set(expected or ()) - sent.keys())
    differences = [f"missing {', '.join(missing)}"] if missing else []
    for kind, count in sorted(sent.items()):
        allowed = 1 if expected is None or kind in expected else 0
        if count > allowed:
            differences.append(f"{count} x {kind}" if count > 1 else f"unexpected {kind}")
    return "; ".join(differences)


def _outbox_problems(outbox: OutboxAudit) -> list[Problem]:
    if not outbox.unpublished:
        return []
    detail = f"{plural(outbox.unpublished, 'event')} not yet published"
    return [Problem(ProblemKind.OUTBOX_UNDRAINED, outbox.service, detail)]


async def _queue_problems(config: AuditConfig, services: tuple[str, ...]) -> list[Problem]:
    problems = []
    async with connect(config.amqp_url) as connection, management_api(config.management) as api:
        probe = QueueProbe(connection)
        for service in services:
            depths = await service_depths(probe, api, service)
            if depths is None:
                detail = f"no queue {dead_letter_queue_name(service)}: has the service ever run?"
                problems.append(Problem(ProblemKind.QUEUES_MISSING, service, detail))
                continue
            if depths.dead_letters:
                count = plural(depths.dead_letters, "message")
                detail = f"{count} in {dead_letter_queue_name(service)}"
                problems.append(Problem(ProblemKind.DEAD_LETTERS, service, detail))
            if depths.in_retry:
                waiting = ", ".join(f"{n} in {q}" for q, n in depths.retrying.items() if n)
                problems.append(Problem(ProblemKind.MESSAGES_IN_RETRY, service, waiting))
    return problems
