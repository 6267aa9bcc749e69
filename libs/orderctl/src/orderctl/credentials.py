"""The operator's credentials: the token `orderctl token` mints from the operator's private
key, and the header that carries it to the services' operator routes.

The key pair is made with openssl (README, "Who may call what"); services hold only its
public half, so this is the one place an operator token comes from.
"""

import re
from datetime import timedelta
from pathlib import Path

from servicekit.auth import mint_operator_token

from .errors import CommandError

TOKEN_VARIABLE = "ORDERCTL_TOKEN"
"""Where the commands that call a service's HTTP API find the operator token: an environment
variable, not an option, so it stays out of shell history and process listings."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)([smhd]?)")


def duration(text: str) -> timedelta:
    """`90s`, `15m`, `8h`, `7d`, or plain seconds; ValueError for anything else or zero."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 8h or 7d")
    return timedelta(seconds=int(match[1]) * _UNITS[match[2] or "s"])


def operator_token(private_key: Path, ttl: timedelta, subject: str) -> str:
    """An operator token signed with the Ed25519 private key in the PEM file `private_key`;
    CommandError if it cannot be read or is no such key."""
    try:
        pem = private_key.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a PEM file"
        raise CommandError(f"cannot read the private key {private_key}: {reason}") from None
    try:
        return mint_operator_token(pem, ttl, subject)
    except ValueError as exc:
        raise CommandError(f"{private_key}: {exc}") from None


def authorization(token: str | None) -> dict[str, str]:
    """The header that sends `token` to a service; none without a token (development)."""
    return {"Authorization": f"Bearer {token}"} if token else {}
