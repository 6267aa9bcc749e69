"""The one builder of `order.created` for every suite, in either version of its contract."""

import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Literal

from contracts import OrderCreatedV1, OrderCreatedV2
from contracts.versions import as_version

Line = tuple[str, int] | tuple[str, str, int]
"""(sku, quantity), or (sku, product name, quantity); the product name defaults to the SKU."""

UNIT_PRICE = Decimal("4.50")
CURRENCY = "EUR"
SHIPPING_ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}


def order_created(
    lines: Sequence[Line] = (("SKU-1", 1),),
    *,
    customer_name: str = "Ada Lovelace",
    customer_email: str = "ada@example.com",
    version: Literal[1, 2] = 2,
) -> OrderCreatedV1 | OrderCreatedV2:
    """An `order.created` as the orders service publishes it: version 2 by default, or, with
    `version=1`, the same event as orders writes it for consumers not yet upgraded (no
    customer or product names; those are what an upcast v1 stands the addressee and the SKU
    in for). Every line costs 4.50 EUR; the order ships to Ada Lovelace in London."""
    named = [line if len(line) == 3 else (line[0], line[0], line[1]) for line in lines]
    event = OrderCreatedV2(
        order_id=uuid.uuid4(),
        customer={"name": customer_name, "email": customer_email},
        lines=[
            {
                "sku": sku,
                "name": name,
                "quantity": quantity,
                "unit_price": {"amount": UNIT_PRICE, "currency": CURRENCY},
            }
            for sku, name, quantity in named
        ],
        total={"amount": UNIT_PRICE * sum(q for *_, q in named), "currency": CURRENCY},
        shipping_address=SHIPPING_ADDRESS,
        correlation_id=uuid.uuid4(),
        producer="orders",
    )
    return as_version(event, version)
