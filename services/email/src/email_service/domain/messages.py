"""What each email says. Pure: no SMTP, no database."""

from dataclasses import dataclass
from uuid import UUID, uuid5

from contracts import OrderCreatedV1


@dataclass(frozen=True)
class OutgoingEmail:
    email_id: UUID
    order_id: UUID
    recipient: str
    subject: str
    body: str
    kind: str

    @property
    def message_id(self) -> str:
        """Stable per email, so a receiving server can drop a resend."""
        return f"<{self.email_id}@orderflow>"


def email_id_for(cause: UUID, kind: str) -> UUID:
    """The same id for every attempt at the email an event causes: if a crash lands between
    SMTP's accept and our commit, the resend carries the same Message-ID."""
    return uuid5(cause, kind)


def order_confirmation(order: OrderCreatedV1) -> OutgoingEmail:
    lines = "\n".join(
        f"  {line.quantity} x {line.sku} at {line.unit_price} {order.currency}"
        for line in order.lines
    )
    address = order.shipping_address
    body = (
        f"Hello {address.name},\n\n"
        f"thank you for your order {order.order_id}. We received:\n\n{lines}\n\n"
        f"Total: {order.total} {order.currency}\n\n"
        f"It will ship to:\n  {address.line1}\n  {address.postal_code} {address.city}\n"
        f"  {address.country}\n\nWe will tell you when it is on its way.\n"
    )
    return OutgoingEmail(
        email_id=email_id_for(order.event_id, "order_confirmation"),
        order_id=order.order_id,
        recipient=str(order.customer_email),
        subject=f"We received your order {order.order_id}",
        body=body,
        kind="order_confirmation",
    )
