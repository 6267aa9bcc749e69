"""Text on the wire that the AMQP client cannot decode, contained to the one message.

pamqp decodes every short string (the properties `content_type`, `message_id`, `type`, ...,
and a delivery's exchange and routing key) and every header name as strict UTF-8. A single
message whose property holds bytes that are not UTF-8 makes it raise while reading the frame;
aiormq then drops the whole connection, every consumer on it stops, and after reconnecting
gets the same message again, for ever, without any handler seeing it.

`tolerate_undecodable_text()` makes such a short string decode with surrogate escapes (its
bytes are kept) and a header table with an undecodable name decode as one header holding the
table's raw bytes, so the message reaches the consumer, which dead-letters it for the reason
`undecodable_parts` gives, without the parts that cannot be encoded again.

A header value that is not UTF-8 pamqp decodes as `bytes`, which it then cannot encode: such a
message could never be dead-lettered nor resubmitted. It decodes as a `bytearray` instead,
which pamqp sends back as the byte array it is.
"""

import struct
from collections.abc import Callable, Mapping
from typing import Any

from pamqp import decode

UNDECODABLE_HEADERS = "x-undecodable-headers"
"""Replaces a header table with a name that is not UTF-8: the table's raw bytes."""

TEXT_PROPERTIES = (
    "content_type",
    "content_encoding",
    "message_id",
    "correlation_id",
    "reply_to",
    "expiration",
    "type",
    "user_id",
    "app_id",
)
"""The message properties AMQP sends as short strings."""

_Decoder = Callable[[bytes], tuple[int, Any]]


def _tolerant_short_str(value: bytes) -> tuple[int, str]:
    try:
        length = value[0]
    except IndexError as exc:
        raise ValueError("Could not unpack short string value") from exc
    return length + 1, value[1 : length + 1].decode("utf-8", "surrogateescape")


def _tolerant_table(strict: _Decoder) -> _Decoder:
    def field_table(value: bytes) -> tuple[int, Any]:
        try:
            return strict(value)
        except UnicodeDecodeError:
            [length] = struct.unpack_from(">I", value)
            return length + 4, {UNDECODABLE_HEADERS: bytearray(value[4 : length + 4])}

    field_table.tolerant = True  # type: ignore[attr-defined]
    return field_table


def _resendable_long_str(strict: _Decoder) -> _Decoder:
    def long_str(value: bytes) -> tuple[int, Any]:
        consumed, text = strict(value)
        return consumed, bytearray(text) if isinstance(text, bytes) else text

    return long_str


def tolerate_undecodable_text() -> None:
    """Install the tolerant decoders into pamqp, once per process."""
    if getattr(decode.METHODS["table"], "tolerant", False):
        return
    table = _tolerant_table(decode.METHODS["table"])
    decode.METHODS["shortstr"] = _tolerant_short_str
    decode.METHODS["table"] = table
    decode.TABLE_MAPPING[b"F"] = table
    decode.TABLE_MAPPING[b"S"] = _resendable_long_str(decode.TABLE_MAPPING[b"S"])


def is_undecodable(text: object) -> bool:
    """True for a str that came from bytes that are not UTF-8 (it holds surrogate escapes)."""
    if not isinstance(text, str):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def raw_bytes(text: str) -> bytes:
    """The bytes a surrogate-escaped str was decoded from."""
    return text.encode("utf-8", "surrogateescape")


def decodable(text: str | None) -> str | None:
    """`text`, or None if it cannot be sent again."""
    return None if is_undecodable(text) else text


def printable(text: str | None) -> str | None:
    """`text` for a log line: the repr of its raw bytes if it is not UTF-8."""
    return repr(raw_bytes(text)) if is_undecodable(text) else text


def undecodable_parts(
    properties: Mapping[str, Any], headers: Mapping[str, Any] | None
) -> list[str]:
    """What in a message is not UTF-8 where AMQP requires it, each with its raw bytes."""
    parts = [
        f"{name}={raw_bytes(properties[name])!r}"
        for name in TEXT_PROPERTIES
        if is_undecodable(properties.get(name))
    ]
    if _holds_undecodable_table(headers):
        parts.append("a header name")
    return parts


def _holds_undecodable_table(value: object) -> bool:
    if isinstance(value, Mapping):
        return UNDECODABLE_HEADERS in value or any(map(_holds_undecodable_table, value.values()))
    if isinstance(value, list | tuple):
        return any(map(_holds_undecodable_table, value))
    return False
