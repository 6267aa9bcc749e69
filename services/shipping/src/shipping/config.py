from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.registry import service
from servicekit.settings import ServiceSettings

SERVICE_ENTRY = service("shipping")


class ShippingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=SERVICE_ENTRY.env_prefix)

    database_url: str = SERVICE_ENTRY.default_database_url
    http_port: int = SERVICE_ENTRY.default_port
    dispatch_delay: float = Field(
        30.0,
        ge=0,
        description="Seconds between an order's confirmation and its shipment's dispatch: "
        "the customer's window to cancel. POST /shipments/{id}/dispatch skips it.",
    )
    dispatch_poll_interval: float = Field(
        1.0, gt=0, description="How often the dispatcher looks for shipments due."
    )
