from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from servicekit.registry import service
from servicekit.settings import ServiceSettings

SERVICE_ENTRY = service("email")


class EmailSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=SERVICE_ENTRY.env_prefix)

    database_url: str = SERVICE_ENTRY.default_database_url
    http_port: int = SERVICE_ENTRY.default_port

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_timeout: float = Field(10.0, gt=0)
    smtp_idle_connections: int | None = Field(
        None,
        ge=0,
        description="SMTP conversations kept open between emails and reused; by default "
        "PREFETCH, as many as emails sent at once (fewer are opened and closed under load).",
    )
    sender_address: str = "orders@orderflow.example"
    smtp_circuit_failure_threshold: int = Field(
        5, ge=1, description="Consecutive SMTP failures that open the circuit."
    )
    smtp_circuit_reset_timeout: float = Field(
        30.0, gt=0, description="Seconds the circuit stays open before one probe."
    )

    @property
    def idle_smtp_conversations(self) -> int:
        """At most this many SMTP conversations wait open for the next email."""
        if self.smtp_idle_connections is None:
            return self.prefetch
        return self.smtp_idle_connections
