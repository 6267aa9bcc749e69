"""Builders the email tests share."""

import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal

import pytest

from contracts import OrderCreatedV2

Line = tuple[str, str, int]
"""(sku, product name, quantity)"""


def build_order_created_v2(
    lines: Sequence[Line] = (("SKU-1", "Analytical engine", 2),),
    *,
    customer_name: str = "Grace Hopper",
    customer_email: str = "grace@example.com",
) -> OrderCreatedV2:
    """An `order.created.v2` as the orders service publishes it, every line at 4.50 EUR."""
    price = Decimal("4.50")
    return OrderCreatedV2(
        order_id=uuid.uuid4(),
        customer={"name": customer_name, "email": customer_email},
        lines=[
            {
                "sku": sku,
                "name": name,
                "quantity": quantity,
                "unit_price": {"amount": price, "currency": "EUR"},
            }
            for sku, name, quantity in lines
        ],
        total={"amount": sum(quantity * price for _, _, quantity in lines), "currency": "EUR"},
        shipping_address={
            "name": "Grace Hopper",
            "line1": "1 Navy Yard",
            "city": "Arlington",
            "postal_code": "22202",
            "country": "US",
        },
        correlation_id=uuid.uuid4(),
        producer="orders",
    )


@pytest.fixture
def order_created_v2() -> Callable[..., OrderCreatedV2]:
    return build_order_created_v2
