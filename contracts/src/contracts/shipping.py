"""Events produced by the shipping service."""

from typing import Literal
from uuid import UUID

from .common import ShippingAddress
from .envelope import Event


class ShipmentCreatedV1(Event):
    """A shipment was prepared for the order's address; it waits for the order's stock.

    Retired: no release publishes it any more. Only the orders service read it, to add a
    line to the order's history, and that line cost a whole event round per order (outbox
    row, publish, delivery, processed record); the shipping service's own API (`GET /shipments`)
    tells what is prepared. Kept so that a consumer still reading it during a rollout decodes it."""

    event_type: Literal["shipment.created"] = "shipment.created"
    schema_version: Literal[1] = 1

    shipment_id: UUID
    order_id: UUID
    shipping_address: ShippingAddress


class ShipmentDispatchedV1(Event):
    """The parcel left the warehouse."""

    event_type: Literal["shipment.dispatched"] = "shipment.dispatched"
    schema_version: Literal[1] = 1

    shipment_id: UUID
    order_id: UUID
    tracking_number: str


class ShipmentCancelledV1(Event):
    """The shipment will never leave: its order was rejected or cancelled."""

    event_type: Literal["shipment.cancelled"] = "shipment.cancelled"
    schema_version: Literal[1] = 1

    shipment_id: UUID
    order_id: UUID
    reason: Literal["order_rejected", "order_cancelled"]
