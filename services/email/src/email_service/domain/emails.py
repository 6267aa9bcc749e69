"""What each email says, and when one is no longer worth sending. Pure: no SMTP, no database."""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from contracts import OrderCreatedV2, RejectedLineV1
from contracts.audit import EmailKind  # the audit's vocabulary too: one definition

_SUPERSEDED_BY = {
    EmailKind.ORDER_CONFIRMATION: {EmailKind.ORDER_CANCELLATION, EmailKind.SHIPMENT_DISPATCHED},
}


def is_superseded(kind: EmailKind, already_sent: Collection[str]) -> bool:
    """A confirmation that arrives after the cancellation (or the dispatch notice) of the same
    order would only confuse the customer: events reach us out of order."""
    return bool(_SUPERSEDED_BY.get(kind, set()) & set(already_sent))


@dataclass(frozen=True)
class CustomerOrder:
    """What the email service keeps of an order, from its order.created event."""

    order_id: UUID
    customer_name: str
    customer_email: str
    lines: Sequence[dict[str, Any]]
    """Each with sku, name, quantity and unit_price (a decimal string)."""
    total: Decimal
    currency: str
    shipping_address: dict[str, str]

    @classmethod
    def from_event(cls, event: OrderCreatedV2) -> "CustomerOrder":
        return cls(
            order_id=event.order_id,
            customer_name=event.customer.name,
            customer_email=str(event.customer.email),
            lines=[
                {
                    "sku": line.sku,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price": str(line.unit_price.amount),
                }
                for line in event.lines
            ],
            total=event.total.amount,
            currency=event.total.currency,
            shipping_address=event.shipping_address.model_dump(),
        )

    def product_name(self, sku: str) -> str:
        return next((line["name"] for line in self.lines if line["sku"] == sku), sku)


@dataclass(frozen=True)
class OutgoingEmail:
    email_id: UUID
    order_id: UUID
    recipient: str
    subject: str
    body: str
    kind: EmailKind

    @property
    def message_id(self) -> str:
        """Stable per email, so a receiving server can drop a resend."""
        return f"<{self.email_id}@orderflow>"


def email_id_for(cause: UUID, kind: str) -> UUID:
    """The same id for every attempt at the email an event causes: if a crash lands between
    SMTP's accept and our commit, the resend carries the same Message-ID."""
    return uuid5(cause, kind)


def _email(
    order: CustomerOrder, cause: UUID, kind: EmailKind, subject: str, text: str
) -> OutgoingEmail:
    return OutgoingEmail(
        email_id=email_id_for(cause, kind),
        order_id=order.order_id,
        recipient=order.customer_email,
        subject=f"{subject} {order.order_id}",
        body=f"Hello {order.customer_name},\n\n{text}\n",
        kind=kind,
    )


def order_confirmation(order: CustomerOrder, cause: UUID) -> OutgoingEmail:
    lines = "\n".join(
        f"  {line['quantity']} x {line['name']} ({line['sku']}) at {line['unit_price']} "
        f"{order.currency}"
        for line in order.lines
    )
    address = order.shipping_address
    text = (
        f"your order {order.order_id} is confirmed:\n\n{lines}\n\n"
        f"Total: {order.total} {order.currency}\n\n"
        f"It will ship to:\n  {address['name']}\n  {address['line1']}\n"
        f"  {address['postal_code']} {address['city']}\n  {address['country']}\n\n"
        "We will tell you when it is on its way."
    )
    return _email(order, cause, EmailKind.ORDER_CONFIRMATION, "Your order is confirmed:", text)


def order_rejection(
    order: CustomerOrder, short_items: Sequence[RejectedLineV1], cause: UUID
) -> OutgoingEmail:
    shortfalls = "\n".join(
        f"  {order.product_name(item.sku)} ({item.sku}): you asked for {item.requested}, "
        + ("we do not sell it" if item.reason == "unknown_sku" else f"we have {item.available}")
        for item in short_items
    )
    text = (
        f"we are sorry: we cannot fulfil your order {order.order_id}, because these items "
        f"are short:\n\n{shortfalls}\n\nNothing was charged and nothing will ship."
    )
    return _email(order, cause, EmailKind.ORDER_REJECTION, "We cannot fulfil your order", text)


def shipment_dispatched(order: CustomerOrder, tracking_number: str, cause: UUID) -> OutgoingEmail:
    text = f"your order {order.order_id} is on its way.\n\nTracking number: {tracking_number}"
    return _email(order, cause, EmailKind.SHIPMENT_DISPATCHED, "Your order has shipped:", text)


def order_cancellation(order: CustomerOrder, reason: str, cause: UUID) -> OutgoingEmail:
    text = (
        f"your order {order.order_id} is cancelled ({reason}).\n\n"
        "Nothing will ship, and any reserved items are released."
    )
    return _email(order, cause, EmailKind.ORDER_CANCELLATION, "Your order is cancelled:", text)
