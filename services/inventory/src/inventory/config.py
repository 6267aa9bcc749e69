from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class InventorySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INVENTORY_")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/inventory"
    http_port: int = 8003
