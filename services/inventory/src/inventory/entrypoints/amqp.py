"""The events the inventory service consumes, and the use case each one runs."""

from collections.abc import Mapping

from contracts import Event, OrderCreatedV1
from servicekit.consumer import Handler

from ..handlers import reserve_stock

EVENT_HANDLERS: Mapping[type[Event], Handler] = {OrderCreatedV1: reserve_stock}
