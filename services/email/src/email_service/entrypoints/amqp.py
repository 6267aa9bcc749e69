"""The events the email service consumes, and the use case each one runs."""

from collections.abc import Mapping
from functools import partial

from contracts import Event, OrderCreatedV1
from servicekit.consumer import Handler

from ..handlers import Sender, send_order_confirmation


def event_handlers(sender: Sender) -> Mapping[type[Event], Handler]:
    return {OrderCreatedV1: partial(send_order_confirmation, sender=sender)}
