"""The envelope every event carries, whatever its type and version."""

from datetime import UTC, datetime
from typing import Any, ClassVar, Self
from uuid import UUID, uuid4

from pydantic import AwareDatetime, ConfigDict, Field

from .common import WireModel


def _now() -> datetime:
    return datetime.now(UTC)


ENVELOPE_ALWAYS_SENT = ("event_id", "event_type", "schema_version", "occurred_at")


def _envelope_is_required(schema: dict[str, Any]) -> None:
    """Fields with defaults are optional to pydantic's schema, but a producer always sends
    them: a consumer must be able to rely on `event_id` above all (its idempotency key)."""
    schema["required"] = sorted({*schema.get("required", ()), *ENVELOPE_ALWAYS_SENT})


class Event(WireModel):
    """Base of all integration events.

    Subclasses pin `event_type` and `schema_version` with `Literal` fields, so the routing
    key `<aggregate>.<event>.v<N>` can be read off the class and off a received body alike.
    Unknown fields are ignored: a producer may add optional fields without breaking
    consumers that do not know them yet.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", json_schema_extra=_envelope_is_required)

    event_id: UUID = Field(
        default_factory=uuid4, description="Unique per event; the idempotency key."
    )
    event_type: str = Field(description="`<aggregate>.<event>`, e.g. `order.created`.")
    schema_version: int = Field(description="Version of this event's schema.")
    occurred_at: AwareDatetime = Field(default_factory=_now)
    correlation_id: UUID = Field(description="Shared by every event of one business flow.")
    causation_id: UUID | None = Field(
        default=None, description="event_id of the event that caused this one, if any."
    )
    producer: str = Field(description="Name of the service that produced the event.")

    TYPE: ClassVar[str]
    VERSION: ClassVar[int]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: object) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.TYPE = cls.model_fields["event_type"].default
        cls.VERSION = cls.model_fields["schema_version"].default

    @classmethod
    def routing_key(cls) -> str:
        return routing_key(cls.TYPE, cls.VERSION)

    @classmethod
    def caused_by(cls, cause: "Event", *, producer: str, **fields: object) -> Self:
        """A follow-up event in the same flow as `cause`."""
        return cls(
            correlation_id=cause.correlation_id,
            causation_id=cause.event_id,
            producer=producer,
            **fields,
        )


def routing_key(event_type: str, schema_version: int) -> str:
    return f"{event_type}.v{schema_version}"
