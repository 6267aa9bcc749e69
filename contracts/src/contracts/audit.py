"""What the services expose for `orderctl audit`: the status and email-kind vocabulary, and
the bodies of each service's audit routes.

The services' domains use these enums as their own, and the audit's expectations are
written with them, so a status renamed or removed in one place breaks every side at once.
Routes (each service's `entrypoints/http.py`, and servicekit for the outbox):

- orders `GET /audit/orders[?order_id=][&limit=&after=]` -> `OrdersAudit`, a page of the
  orders (`contracts.api.Page`); 404 for an unknown order id
- inventory, shipping, email `POST /audit/orders` with `OrderIds` (at most
  `MAX_PAGE_SIZE`: one page of orders) -> `ReservationsAudit`, `ShipmentsAudit`, `EmailsAudit`
- every service `GET /audit/outbox` -> `OutboxAudit`
"""

from enum import StrEnum
from uuid import UUID

from pydantic import Field

from .api import MAX_PAGE_SIZE
from .common import WireModel


class OrderStatus(StrEnum):
    """An order's status, as orders holds it."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    SHIPPED = "shipped"
    CANCELLED = "cancelled"


class ReservationStatus(StrEnum):
    """A stock reservation's status, as inventory holds it."""

    RESERVED = "reserved"
    REJECTED = "rejected"
    """Some line was short: nothing was reserved."""
    RELEASED = "released"
    """The order was cancelled: the stock is available again."""
    FULFILLED = "fulfilled"
    """The order shipped: the units left the warehouse."""


class ShipmentStatus(StrEnum):
    """A shipment's status, as shipping holds it."""

    PREPARING = "preparing"
    """Waiting for the order's stock to be reserved."""
    READY = "ready"
    """The order is confirmed: it leaves at `dispatch_after`, or when dispatched by hand."""
    DISPATCHED = "dispatched"
    CANCELLED = "cancelled"


class EmailKind(StrEnum):
    """What an email tells the customer; email sends at most one of each per order."""

    ORDER_CONFIRMATION = "order_confirmation"
    ORDER_REJECTION = "order_rejection"
    SHIPMENT_DISPATCHED = "shipment_dispatched"
    ORDER_CANCELLATION = "order_cancellation"


class OrderAudit(WireModel):
    order_id: UUID
    status: OrderStatus
    was_confirmed: bool = Field(description="Its history has an event that confirmed it.")


class OrdersAudit(WireModel):
    """orders `GET /audit/orders`: a page of the orders, oldest first (or the one asked
    for)."""

    orders: list[OrderAudit]


class OrderIds(WireModel):
    """The body of `POST /audit/orders`: the orders to report on, a page of them at most."""

    order_ids: list[UUID] = Field(max_length=MAX_PAGE_SIZE)


class ReservationsAudit(WireModel):
    """inventory `POST /audit/orders`: each order asked about, with the status of each of
    its reservations ([] when it has none)."""

    reservations: dict[UUID, list[ReservationStatus]]


class ShipmentsAudit(WireModel):
    """shipping `POST /audit/orders`: each order asked about, with the status of each of its
    shipments ([] when it has none)."""

    shipments: dict[UUID, list[ShipmentStatus]]


class EmailsAudit(WireModel):
    """email `POST /audit/orders`: each order asked about, with the kind of each email sent
    about it ([] when none was)."""

    emails: dict[UUID, list[EmailKind]]


class OutboxAudit(WireModel):
    """Every service's `GET /audit/outbox`."""

    service: str
    unpublished: int = Field(ge=0, description="Events in its outbox not yet published.")
