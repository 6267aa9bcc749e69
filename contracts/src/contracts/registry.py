"""Every published event class, found by routing key."""

from .envelope import Event
from .inventory import StockRejectedV1, StockReservedV1
from .notifications import OrderConfirmationSentV1
from .orders import OrderCreatedV1
from .shipping import ShipmentCreatedV1

ALL_EVENTS: tuple[type[Event], ...] = (
    OrderCreatedV1,
    StockReservedV1,
    StockRejectedV1,
    ShipmentCreatedV1,
    OrderConfirmationSentV1,
)

EVENTS_BY_ROUTING_KEY: dict[str, type[Event]] = {cls.routing_key(): cls for cls in ALL_EVENTS}
