"""Events produced by the inventory service, and its availability query (request-reply)."""

from typing import Literal
from uuid import UUID

from pydantic import ConfigDict, Field

from .common import Sku, WireModel
from .envelope import Event


class ReservedLineV1(WireModel):
    model_config = ConfigDict(frozen=True)

    sku: Sku
    quantity: int = Field(gt=0)


class StockReservedV1(Event):
    """Every line of the order is reserved."""

    event_type: Literal["stock.reserved"] = "stock.reserved"
    schema_version: Literal[1] = 1

    order_id: UUID
    lines: tuple[ReservedLineV1, ...] = Field(min_length=1)


class RejectedLineV1(WireModel):
    model_config = ConfigDict(frozen=True)

    sku: Sku
    requested: int = Field(gt=0)
    available: int = Field(ge=0)
    reason: Literal["insufficient_stock", "unknown_sku"]


class StockRejectedV1(Event):
    """The order cannot be reserved in full; nothing was reserved."""

    event_type: Literal["stock.rejected"] = "stock.rejected"
    schema_version: Literal[1] = 1

    order_id: UUID
    rejected_lines: tuple[RejectedLineV1, ...] = Field(
        min_length=1, description="Only the lines that could not be reserved, each with why."
    )


class StockReleasedV1(Event):
    """The order was cancelled: what it had reserved is available again."""

    event_type: Literal["stock.released"] = "stock.released"
    schema_version: Literal[1] = 1

    order_id: UUID
    lines: tuple[ReservedLineV1, ...] = Field(min_length=1)


class AvailabilityQueryV1(WireModel):
    """Request (over RabbitMQ request-reply): how much of `sku` can be ordered now?"""

    model_config = ConfigDict(frozen=True)

    sku: Sku


class AvailabilityV1(WireModel):
    """Reply to AvailabilityQueryV1."""

    model_config = ConfigDict(frozen=True)

    sku: Sku
    stocked: bool = Field(description="False when inventory has never heard of the SKU.")
    available: int = Field(ge=0)
    reserved: int = Field(ge=0)
