"""Events produced by the shipping service."""

from typing import Literal
from uuid import UUID

from .envelope import Event
from .orders import ShippingAddress


class ShipmentCreatedV1(Event):
    """A shipment was prepared for the order's address."""

    event_type: Literal["shipment.created"] = "shipment.created"
    schema_version: Literal[1] = 1

    shipment_id: UUID
    order_id: UUID
    shipping_address: ShippingAddress
