"""Events produced by the email service."""

from typing import Literal
from uuid import UUID

from pydantic import EmailStr

from .envelope import Event


class OrderConfirmationSentV1(Event):
    """The order confirmation email was accepted by the SMTP server.

    Retired: no release publishes it any more. Only the orders service read it, to add a
    line to the order's history, and that line cost a whole event round per order (outbox
    row, publish, delivery, processed record); the email service's own API (`GET /emails`)
    tells what was sent. Kept so that a consumer still reading it during a rollout decodes it."""

    event_type: Literal["order_confirmation.sent"] = "order_confirmation.sent"
    schema_version: Literal[1] = 1

    order_id: UUID
    email_id: UUID
    recipient: EmailStr
