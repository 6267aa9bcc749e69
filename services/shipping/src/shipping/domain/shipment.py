"""A shipment: one parcel per order, to the order's address."""

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID, uuid4

from contracts import OrderCreatedV1, ShippingAddress


class ShipmentStatus(StrEnum):
    PREPARING = "preparing"


@dataclass(frozen=True)
class Shipment:
    shipment_id: UUID
    order_id: UUID
    status: ShipmentStatus
    shipping_address: ShippingAddress
    lines: tuple[tuple[str, int], ...]


def prepare_shipment(order: OrderCreatedV1) -> Shipment:
    """A new shipment for everything the order contains."""
    return Shipment(
        shipment_id=uuid4(),
        order_id=order.order_id,
        status=ShipmentStatus.PREPARING,
        shipping_address=order.shipping_address,
        lines=tuple((line.sku, line.quantity) for line in order.lines),
    )
