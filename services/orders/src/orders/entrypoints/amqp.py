"""The events the orders service consumes, and the use case each one runs."""

from collections.abc import Mapping

from contracts import (
    Event,
    OrderConfirmationSentV1,
    ShipmentCreatedV1,
    StockRejectedV1,
    StockReservedV1,
)
from servicekit.consumer import Handler

from ..handlers import apply_stock_outcome, record_in_history

EVENT_HANDLERS: Mapping[type[Event], Handler] = {
    StockReservedV1: apply_stock_outcome,
    StockRejectedV1: apply_stock_outcome,
    ShipmentCreatedV1: record_in_history,
    OrderConfirmationSentV1: record_in_history,
}
