from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class ShippingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SHIPPING_")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/shipping"
    http_port: int = 8004
