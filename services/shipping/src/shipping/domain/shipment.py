"""A shipment: one parcel per order, to the order's address, dispatched once its order is
confirmed and the handling delay has passed, unless the order is rejected or cancelled."""

import secrets
from dataclasses import dataclass
from uuid import UUID, uuid4

from contracts import OrderCreatedV2, ShippingAddress
from contracts.audit import ShipmentStatus  # the audit's vocabulary too: one definition

CANCELLABLE = frozenset({ShipmentStatus.PREPARING, ShipmentStatus.READY})


@dataclass(frozen=True)
class Shipment:
    shipment_id: UUID
    order_id: UUID
    correlation_id: UUID
    status: ShipmentStatus
    shipping_address: ShippingAddress
    lines: tuple[tuple[str, int], ...]


def prepare_shipment(order: OrderCreatedV2) -> Shipment:
    """A new shipment for everything the order contains."""
    return Shipment(
        shipment_id=uuid4(),
        order_id=order.order_id,
        correlation_id=order.correlation_id,
        status=ShipmentStatus.PREPARING,
        shipping_address=order.shipping_address,
        lines=tuple((line.sku, line.quantity) for line in order.lines),
    )


def dispatch_refused(status: ShipmentStatus) -> str | None:
    """Why a shipment in `status` cannot be dispatched now, or None when it can."""
    return {
        ShipmentStatus.PREPARING: "its order is not confirmed yet (stock not reserved)",
        ShipmentStatus.CANCELLED: "it was cancelled",
    }.get(status)


def new_tracking_number() -> str:
    return f"OF{secrets.token_hex(6).upper()}"
