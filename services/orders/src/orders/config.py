from datetime import timedelta
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.auth import OrderTokenSettings
from servicekit.durations import Duration
from servicekit.registry import service
from servicekit.settings import ServiceSettings

SERVICE_ENTRY = service("orders")


class OrdersSettings(ServiceSettings, OrderTokenSettings):
    model_config = SettingsConfigDict(env_prefix=SERVICE_ENTRY.env_prefix)

    database_url: str = SERVICE_ENTRY.default_database_url
    http_port: int = SERVICE_ENTRY.default_port
    order_created_versions: tuple[Literal[1, 2], ...] = Field(
        (2,),
        min_length=1,
        description="Versions of order.created to publish, e.g. [1, 2] while some consumers "
        "only read v1; every version carries the same event id.",
    )
    placing_batch_size: int = Field(
        16,
        ge=1,
        le=1000,
        description="Concurrent POST /orders placed in one transaction at most, each answered "
        "after its commit; 1 places each in a transaction of its own, concurrently.",
    )
    availability_timeout: float = Field(
        2.0, gt=0, description="Seconds GET /availability waits for inventory before a 504."
    )
    idempotency_key_retention: Duration = Field(
        timedelta(hours=24),
        gt=timedelta(0),
        description="How long an Idempotency-Key answers as it first did; after that it is "
        "a new key (and the retention job deletes it).",
    )
