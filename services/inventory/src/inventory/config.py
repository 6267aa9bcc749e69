from pydantic_settings import SettingsConfigDict

from servicekit.registry import service
from servicekit.settings import ServiceSettings

SERVICE_ENTRY = service("inventory")


class InventorySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=SERVICE_ENTRY.env_prefix)

    database_url: str = SERVICE_ENTRY.default_database_url
    http_port: int = SERVICE_ENTRY.default_port
