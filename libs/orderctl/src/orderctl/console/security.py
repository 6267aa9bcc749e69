"""Who may use the console: operators, as proven by an operator token.

The console verifies operator tokens with the operator public key, as every service does
(`servicekit.auth`). A browser signs in once by pasting a token (`orderctl token`) into the
login form; the console keeps it in a cookie (HttpOnly, SameSite=Strict, expiring with the
token) and verifies it again on every request, so the session is the token itself and
nothing is stored on the server. A script may send it as `Authorization: Bearer` instead.
SameSite=Strict keeps the cookie off requests that other sites start, so no page elsewhere
can post a replay or a purge in an operator's name.

Without a key (development) every page is open, as the services' operator routes are; the
console then refuses to listen anywhere but on the loopback interface.
"""

from datetime import UTC, datetime
from ipaddress import ip_address
from urllib.parse import quote

import jwt
from fastapi import HTTPException, Request, status

from servicekit.auth import OperatorPublicKey

COOKIE = "orderctl_console"


class SignInRequired(Exception):
    """A page was asked for without a valid operator token: the browser goes to the login form."""

    def __init__(self, next_path: str) -> None:
        self.location = f"/login?next={quote(next_path)}"


def token_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return request.cookies.get(COOKIE)


def verified_claims(key: OperatorPublicKey, token: str | None) -> dict | None:
    """The claims of a valid operator token; None for none, or one that is invalid or expired."""
    if not token:
        return None
    try:
        return key.verify(token)
    except jwt.InvalidTokenError:
        return None


async def require_operator(request: Request) -> None:
    """Every page and action: an operator token (none needed where no key is configured).
    A page read by a browser goes to the login form; an action or a stream gets 401."""
    key: OperatorPublicKey | None = request.app.state.config.operator_key
    if key is None or verified_claims(key, token_of(request)) is not None:
        return
    if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
        raise SignInRequired(
            request.url.path + (f"?{request.url.query}" if request.url.query else "")
        )
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "an operator token is required",
        headers={"WWW-Authenticate": "Bearer"},
    )


def cookie_lifetime(claims: dict) -> int:
    """Seconds until the token expires: the cookie goes with it."""
    return max(0, int(claims["exp"] - datetime.now(UTC).timestamp()))


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a path of this console only, never another site."""
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
