"""Settings every service shares; each service subclasses with its own env prefix."""

import ssl
from datetime import timedelta
from typing import Literal, Self

from pydantic import Field, FilePath, PositiveFloat, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

from .auth import OperatorPublicKeySetting
from .durations import Duration
from .logs import LogFormat
from .topology import DEFAULT_RETRY_DELAYS


class ServiceSettings(BaseSettings):
    """Validated at start-up. Subclasses set `env_prefix` and the defaults that differ."""

    # A refused setting is named, never echoed: values hold passwords, secrets and keys.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    environment: Literal["development", "production"] = "development"
    database_url: str
    rabbitmq_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/",
        description="amqps:// for TLS, verified against rabbitmq_ca_file or the system's CAs",
    )
    rabbitmq_ca_file: FilePath | None = Field(
        None, description="CA bundle (PEM) the broker's certificate is verified against"
    )
    operator_token_public_key: OperatorPublicKeySetting | None = Field(
        None,
        description="Ed25519 public key (PEM, or the path of a PEM file) that operator tokens "
        "are verified with; required in production. Unset in development: the operator "
        "routes are open.",
    )
    http_host: str = "127.0.0.1"
    http_port: int
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: LogFormat = Field(
        "text", description="text for a terminal; json: one object per line, with trace ids"
    )

    prefetch: int = Field(
        16,
        ge=1,
        le=1000,
        description="Unacked messages per consuming queue, and the most handlers run at once.",
    )
    consumer_batch_size: int = Field(
        16,
        ge=1,
        le=1000,
        description="Messages applied in one transaction and acked after its commit; "
        "1 applies each in its own, up to prefetch at once.",
    )
    db_pool_size: int = Field(
        24, ge=4, description="At least prefetch + 3: each handler holds one."
    )
    graceful_timeout: float = Field(
        10.0, gt=0, description="Seconds in-flight handlers get to finish on shutdown."
    )
    outbox_batch_size: int = Field(100, ge=1, le=10_000)
    outbox_poll_interval: float = Field(
        1.0,
        gt=0,
        description="Seconds between polls for rows this process did not write (other "
        "replicas, timers); rows it writes wake the relay at once.",
    )
    outbox_sweep_interval: float = Field(
        60.0,
        gt=0,
        description="Seconds between relay rounds that read every unpublished row; the rounds "
        "between read only rows due since shortly before the last sweep.",
    )
    publish_confirm_timeout: float = Field(10.0, gt=0)
    retry_delays: tuple[PositiveFloat, ...] = Field(
        DEFAULT_RETRY_DELAYS,
        min_length=1,
        description="Seconds before each retry of a failing message; the last one repeats.",
    )
    max_attempts: int = Field(
        4, ge=1, description="Deliveries of a transiently failing message before the DLQ."
    )
    retention_interval: Duration = Field(
        timedelta(minutes=5),
        gt=timedelta(0),
        description="Time between retention rounds (each replica's, jittered by up to 10%).",
    )
    retention_batch_size: int = Field(
        1000, ge=1, le=100_000, description="Rows a retention round deletes per transaction."
    )
    outbox_retention: Duration = Field(
        timedelta(hours=24),
        gt=timedelta(0),
        description="How long a published outbox row is kept; unpublished rows always are.",
    )
    processed_message_retention: Duration = Field(
        timedelta(days=7),
        gt=timedelta(0),
        description="How long a processed event id is kept to recognise its duplicates; at "
        "least 2 x retry_span + processed_message_retention_margin.",
    )
    processed_message_retention_margin: Duration = Field(
        timedelta(hours=1),
        ge=timedelta(0),
        description="Added to twice the retry span in processed_message_retention's floor.",
    )

    @model_validator(mode="after")
    def _pool_fits_prefetch(self) -> Self:
        if self.db_pool_size < self.prefetch + 3:
            raise ValueError(
                f"db_pool_size ({self.db_pool_size}) must be at least prefetch + 3 "
                f"({self.prefetch + 3}): each running handler (at most prefetch at once) holds "
                "a connection, and HTTP and the outbox relay need theirs"
            )
        return self

    @property
    def retry_span(self) -> timedelta:
        """The longest a failing message spends waiting in the retry chain: the backoff
        before each of its `max_attempts` deliveries but the first, the last delay repeating."""
        delays = self.retry_delays
        waits = [delays[min(n, len(delays) - 1)] for n in range(self.max_attempts - 1)]
        return timedelta(seconds=sum(waits))

    @model_validator(mode="after")
    def _processed_messages_outlive_redeliveries(self) -> Self:
        """A duplicate is recognised only while its event id is kept. A copy of a processed
        event can still arrive after a whole retry chain (its other copy, or a redelivery
        whose ack was lost, going through every backoff); twice the chain covers a copy that
        starts its chain as late as the first one ends. The margin covers the rest (a relay
        publishing a row twice, consumers catching up after an outage)."""
        floor = 2 * self.retry_span + self.processed_message_retention_margin
        if self.processed_message_retention < floor:
            variable = f"{self.model_config.get('env_prefix', '')}PROCESSED_MESSAGE_RETENTION"
            raise ValueError(
                f"processed_message_retention ({variable}: {self.processed_message_retention}) "
                "must be at "
                f"least 2 x the retry span ({self.retry_span}: retry_delays "
                f"{list(self.retry_delays)} over max_attempts {self.max_attempts}) + "
                f"processed_message_retention_margin ({self.processed_message_retention_margin})"
                f" = {floor}: a duplicate arriving later would have its effect again"
            )
        return self

    @model_validator(mode="after")
    def _ca_file_only_with_tls(self) -> Self:
        if self.rabbitmq_ca_file is not None and URL(self.rabbitmq_url).scheme != "amqps":
            raise ValueError("rabbitmq_ca_file is set, so rabbitmq_url must be amqps://")
        return self

    def rabbitmq_ssl_context(self) -> ssl.SSLContext | None:
        """For an amqps:// URL, a context that verifies the broker's certificate and host
        name (against `rabbitmq_ca_file` if set); None for plain amqp://.

        PostgreSQL's TLS lives in `database_url` itself, which asyncpg reads for every
        connection and pool: `?sslmode=verify-full&sslrootcert=/path/to/ca.pem`."""
        if URL(self.rabbitmq_url).scheme != "amqps":
            return None
        return ssl.create_default_context(cafile=self.rabbitmq_ca_file)

    @model_validator(mode="after")
    def _no_default_credentials_in_production(self) -> Self:
        if self.environment == "production" and URL(self.rabbitmq_url).password in (None, "guest"):
            raise ValueError("rabbitmq_url uses the default guest credentials in production")
        return self

    @model_validator(mode="after")
    def _operator_key_in_production(self) -> Self:
        if self.environment == "production" and self.operator_token_public_key is None:
            variable = f"{self.model_config.get('env_prefix', '')}OPERATOR_TOKEN_PUBLIC_KEY"
            raise ValueError(
                f"operator_token_public_key ({variable}) is not set: in production the "
                "operator routes accept only tokens it verifies (`orderctl token`)"
            )
        return self
