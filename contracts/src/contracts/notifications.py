"""Events produced by the email service."""

from typing import Literal
from uuid import UUID

from pydantic import EmailStr

from .envelope import Event


class OrderConfirmationSentV1(Event):
    """The order confirmation email was accepted by the SMTP server."""

    event_type: Literal["order_confirmation.sent"] = "order_confirmation.sent"
    schema_version: Literal[1] = 1

    order_id: UUID
    email_id: UUID
    recipient: EmailStr
