"""Value types several contracts share."""

from decimal import Decimal
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")]


def _decimal_string(value: object) -> object:
    if not isinstance(value, str | Decimal):
        raise ValueError("an amount is a decimal string such as '12.50', never a JSON number")
    return value


AMOUNT_PATTERN = r"^\d{1,10}(\.\d{1,2})?$"

Amount = Annotated[
    Decimal,
    BeforeValidator(_decimal_string),
    Field(ge=0, max_digits=12, decimal_places=2),
    WithJsonSchema({"type": "string", "pattern": AMOUNT_PATTERN, "examples": ["12.50"]}),
]
"""An exact amount on the wire as a decimal string: floats lose cents."""


class ShippingAddress(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=200)
    line1: str = Field(min_length=1, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    postal_code: str = Field(min_length=1, max_length=20)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 code.")
