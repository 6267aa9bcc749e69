from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class ShippingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SHIPPING_")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/shipping"
    http_port: int = 8004
    dispatch_delay: float = Field(
        30.0,
        ge=0,
        description="Seconds between an order's confirmation and its shipment's dispatch: "
        "the customer's window to cancel. POST /shipments/{id}/dispatch skips it.",
    )
    dispatch_poll_interval: float = Field(
        1.0, gt=0, description="How often the dispatcher looks for shipments due."
    )
