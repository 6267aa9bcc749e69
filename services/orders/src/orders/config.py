from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class OrdersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/orders"
    http_port: int = 8001
