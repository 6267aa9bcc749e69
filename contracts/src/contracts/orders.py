"""Events produced by the orders service."""

from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from .envelope import Event

Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")]


class ShippingAddress(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=200)
    line1: str = Field(min_length=1, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    postal_code: str = Field(min_length=1, max_length=20)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 code.")


class OrderLineV1(BaseModel):
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
