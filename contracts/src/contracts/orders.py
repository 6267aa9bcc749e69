"""Events produced by the orders service."""

from typing import Literal, Self
from uuid import UUID

from pydantic import ConfigDict, EmailStr, Field, model_validator

from .common import Amount, CurrencyCode, Money, ShippingAddress, Sku, WireModel
from .envelope import Event
from .inventory import RejectedLineV1


class OrderLineV1(WireModel):
    model_config = ConfigDict(frozen=True)

    sku: Sku
    quantity: int = Field(gt=0, le=10_000)
    unit_price: Money


class OrderCreatedV1(Event):
    """A customer placed an order; it waits for stock to be reserved."""

    event_type: Literal["order.created"] = "order.created"
    schema_version: Literal[1] = 1

    order_id: UUID
    customer_email: EmailStr
    lines: tuple[OrderLineV1, ...] = Field(min_length=1)
    total: Money
    currency: CurrencyCode
    shipping_address: ShippingAddress


class MoneyV2(WireModel):
    model_config = ConfigDict(frozen=True)

    amount: Amount
    currency: CurrencyCode


class CustomerV2(WireModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=200)
    email: EmailStr


class OrderLineV2(WireModel):
    model_config = ConfigDict(frozen=True)

    sku: Sku
    name: str = Field(min_length=1, max_length=200, description="Product name, for people.")
    quantity: int = Field(gt=0, le=10_000)
    unit_price: MoneyV2


class OrderCreatedV2(Event):
    """A customer placed an order; it waits for stock to be reserved.

    v2 over v1: the customer has a name, each line a product name, and every amount is a
    decimal string with its currency.
    """

    event_type: Literal["order.created"] = "order.created"
    schema_version: Literal[2] = 2

    order_id: UUID
    customer: CustomerV2
    lines: tuple[OrderLineV2, ...] = Field(min_length=1)
    total: MoneyV2
    shipping_address: ShippingAddress

    @model_validator(mode="after")
    def _one_currency(self) -> Self:
        currencies = {line.unit_price.currency for line in self.lines} | {self.total.currency}
        if len(currencies) > 1:
            raise ValueError(f"an order is in one currency, not {sorted(currencies)}")
        return self


class OrderConfirmedV1(Event):
    """Stock is reserved for the whole order; it will ship unless cancelled first."""

    event_type: Literal["order.confirmed"] = "order.confirmed"
    schema_version: Literal[1] = 1

    order_id: UUID


class OrderRejectedV1(Event):
    """The order cannot be fulfilled; nothing is reserved and nothing will ship."""

    event_type: Literal["order.rejected"] = "order.rejected"
    schema_version: Literal[1] = 1

    order_id: UUID
    short_items: tuple[RejectedLineV1, ...] = Field(
        min_length=1, description="The items that could not be reserved, each with why."
    )


class OrderCancelledV1(Event):
    """The customer cancelled the order before it was dispatched."""

    event_type: Literal["order.cancelled"] = "order.cancelled"
    schema_version: Literal[1] = 1

    order_id: UUID
    previous_status: Literal["pending", "confirmed"]
    reason: str = Field(max_length=500)


class OrderShippedV1(Event):
    """The order's shipment left the warehouse."""

    event_type: Literal["order.shipped"] = "order.shipped"
    schema_version: Literal[1] = 1

    order_id: UUID
    shipment_id: UUID
    tracking_number: str
