"""Builders of the events tests publish."""

import uuid
from decimal import Decimal

from contracts import OrderCreatedV1


def order_created_event(
    lines: list[tuple[str, int]] | None = None, *, customer_email: str = "ada@example.com"
) -> OrderCreatedV1:
    """An `order.created.v1` as the orders service would publish it."""
    priced = [
        {"sku": sku, "quantity": quantity, "unit_price": Decimal("4.50")}
        for sku, quantity in (lines or [("SKU-1", 1)])
    ]
    return OrderCreatedV1(
        order_id=uuid.uuid4(),
        customer_email=customer_email,
        lines=priced,
        total=sum(line["quantity"] * line["unit_price"] for line in priced),
        currency="EUR",
        shipping_address={
            "name": "Ada Lovelace",
            "line1": "12 St James's Square",
            "city": "London",
            "postal_code": "SW1Y 4JH",
            "country": "GB",
        },
        correlation_id=uuid.uuid4(),
        producer="orders",
    )
