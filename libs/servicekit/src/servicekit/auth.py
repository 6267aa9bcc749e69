"""Who may call what over HTTP: bearer JWTs, checked by FastAPI dependencies.

- **Operator tokens** are EdDSA (Ed25519) JWTs for audience `orderflow-operator`, minted by
  `orderctl token` with the operator's private key. Every service holds only the public half
  (`<PREFIX>OPERATOR_TOKEN_PUBLIC_KEY`), so no service can mint one. `OperatorOnly` guards
  the operator routes.
- **Order tokens** are HS256 JWTs for audience `orderflow-order` whose `sub` is one order
  id. orders mints one in its answer to `POST /orders` with a secret only it holds
  (`ORDERS_ORDER_TOKEN_SECRET`) and is the only one to verify them. `OrderAccess` guards a
  route on `{order_id}`: that order's token, or an operator token.

Keys are parsed once, when the settings are validated: a request costs a signature check.
In production the settings refuse to validate without the keys. In development a route is
checked only where its key is configured, so `make run` needs no credentials.
"""

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Self
from uuid import UUID

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    InstanceOf,
    SecretStr,
    model_validator,
)

from .durations import Duration

log = logging.getLogger(__name__)

OPERATOR_AUDIENCE = "orderflow-operator"
ORDER_AUDIENCE = "orderflow-order"
OPERATOR_ALGORITHM = "EdDSA"
ORDER_ALGORITHM = "HS256"
LEEWAY = timedelta(seconds=30)
"""Clock skew allowed between the machine that minted a token and the service checking it."""
MIN_ORDER_TOKEN_SECRET_BYTES = 32
"""HS256's own key size: a shorter secret is easier to guess than the signature is to forge."""
DEFAULT_ORDER_TOKEN_TTL = timedelta(days=30)

_EDDSA = jwt.get_algorithm_by_name(OPERATOR_ALGORITHM)


class OperatorPublicKey:
    """The public half of the operator key pair, parsed once: it verifies operator tokens and
    cannot mint one."""

    def __init__(self, pem: str) -> None:
        if "PRIVATE KEY" in pem:
            raise ValueError(
                "this is a private key: give services only its public half "
                "(`openssl pkey -in operator.key -pubout`)"
            )
        try:
            self._key = _EDDSA.prepare_key(pem)
        except (jwt.InvalidKeyError, ValueError) as exc:
            raise ValueError(f"not an Ed25519 public key in PEM ({exc})") from None

    @classmethod
    def from_setting(cls, value: object) -> object:
        """The key from PEM text or the path of a PEM file; anything else is left for
        pydantic to refuse."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            raise ValueError("empty: give the PEM itself, or the path of a PEM file")
        if not text.startswith("-----BEGIN"):
            try:
                text = Path(text).read_text()
            except OSError as exc:
                raise ValueError(f"cannot read the key file {text}: {exc.strerror}") from None
        return cls(text)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of an operator token this key's private half signed, not expired;
        jwt.InvalidTokenError otherwise."""
        return jwt.decode(
            token,
            self._key,
            algorithms=[OPERATOR_ALGORITHM],
            audience=OPERATOR_AUDIENCE,
            leeway=LEEWAY,
            options={"require": ["exp", "aud"], "strict_aud": True},
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({OPERATOR_ALGORITHM})"


OperatorPublicKeySetting = Annotated[
    InstanceOf[OperatorPublicKey], BeforeValidator(OperatorPublicKey.from_setting)
]
"""A setting holding the operator public key: PEM text, or the path of a PEM file."""


def mint_operator_token(private_key_pem: str, ttl: timedelta, subject: str) -> str:
    """An operator token signed with the operator's Ed25519 private key (PEM, unencrypted),
    valid for `ttl`; `subject` says whose it is. ValueError for another kind of key."""
    if "PRIVATE KEY" not in private_key_pem:
        raise ValueError("not a private key in PEM")
    now = datetime.now(UTC)
    claims = {"sub": subject, "aud": OPERATOR_AUDIENCE, "iat": now, "exp": now + ttl}
    try:
        return jwt.encode(claims, private_key_pem, algorithm=OPERATOR_ALGORITHM)
    except (jwt.InvalidKeyError, ValueError) as exc:
        raise ValueError(f"not an unencrypted Ed25519 private key in PEM ({exc})") from None


def _long_enough(secret: SecretStr) -> SecretStr:
    if len(secret.get_secret_value().encode()) < MIN_ORDER_TOKEN_SECRET_BYTES:
        raise ValueError(
            f"must be at least {MIN_ORDER_TOKEN_SECRET_BYTES} bytes, e.g. `openssl rand -hex 32`"
        )
    return secret


class OrderTokenSettings(BaseModel):
    """What the service that issues order tokens (orders) adds to its ServiceSettings:
    `class OrdersSettings(ServiceSettings, OrderTokenSettings)`; it reads their
    `environment`."""

    order_token_secret: Annotated[SecretStr, AfterValidator(_long_enough)] | None = Field(
        None,
        description="Signs and verifies order tokens (HS256), at least 32 bytes; required in "
        "production. Unset in development: the order routes are open.",
    )
    order_token_ttl: Duration = Field(
        DEFAULT_ORDER_TOKEN_TTL,
        gt=timedelta(0),
        description="How long the token in a POST /orders answer gives access to the order.",
    )

    @model_validator(mode="after")
    def _order_token_secret_in_production(self) -> Self:
        if self.environment == "production" and self.order_token_secret is None:
            variable = f"{self.model_config.get('env_prefix', '')}ORDER_TOKEN_SECRET"
            raise ValueError(
                f"order_token_secret ({variable}) is not set: in production an order is read "
                "or cancelled only with the token its POST /orders answer carried"
            )
        return self


def mint_order_token(settings: OrderTokenSettings, order_id: UUID) -> str | None:
    """The token giving access to this order alone, for `order_token_ttl`; None where no
    secret is configured (development), as the order's routes are open then."""
    if settings.order_token_secret is None:
        return None
    now = datetime.now(UTC)
    claims = {
        "sub": str(order_id),
        "aud": ORDER_AUDIENCE,
        "iat": now,
        "exp": now + settings.order_token_ttl,
    }
    return jwt.encode(
        claims, settings.order_token_secret.get_secret_value(), algorithm=ORDER_ALGORITHM
    )


def _order_of(token: str, secret: SecretStr) -> UUID:
    """The order id an order token was minted for; jwt.InvalidTokenError unless it is an
    unexpired order token signed with `secret`."""
    claims = jwt.decode(
        token,
        secret.get_secret_value(),
        algorithms=[ORDER_ALGORITHM],
        audience=ORDER_AUDIENCE,
        leeway=LEEWAY,
        options={"require": ["exp", "aud", "sub"], "strict_aud": True},
    )
    try:
        return UUID(claims["sub"])
    except ValueError:
        raise jwt.InvalidTokenError("sub is not an order id") from None


_bearer = HTTPBearer(
    auto_error=False,
    description="An operator token (`orderctl token`), or for an order's own routes the "
    "`access_token` of its POST /orders answer.",
)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
_query_token = APIKeyQuery(
    name="access_token",
    auto_error=False,
    description="The same token as the bearer one, for a client that cannot send headers "
    "(a browser's EventSource); read only where a route says so.",
)
QueryToken = Annotated[str | None, Depends(_query_token)]


def _settings(request: Request) -> Any:
    return request.app.state.runtime.settings


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return credentials.credentials


def _refused(request: Request, *errors: jwt.InvalidTokenError) -> HTTPException:
    """401 for a token that is not valid here; why goes to the log, not to the caller."""
    why = ", ".join(type(error).__name__ for error in errors)
    log.info("%s %s: token refused (%s)", request.method, request.url.path, why)
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "invalid or expired token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


async def require_operator(request: Request, credentials: BearerCredentials) -> None:
    """401 unless the request carries an operator token; nothing is checked where the
    service has no operator key (development)."""
    key: OperatorPublicKey | None = _settings(request).operator_token_public_key
    if key is None:
        return
    try:
        key.verify(_token(credentials))
    except jwt.InvalidTokenError as exc:
        raise _refused(request, exc) from None


async def require_order_access(
    order_id: UUID, request: Request, credentials: BearerCredentials
) -> None:
    """For a route on `{order_id}`: the token of that order, or an operator token. 401 for
    none or an invalid one, 403 for another order's; nothing is checked where the service
    has no order-token secret (development)."""
    _check_order_access(order_id, request, credentials)


async def require_order_access_in_query(
    order_id: UUID, request: Request, credentials: BearerCredentials, in_query: QueryToken
) -> None:
    """As `require_order_access`, the token also taken from `?access_token=` when no
    Authorization header carries one: a browser's EventSource cannot send headers. Only for
    a stream's route: a URL is kept in histories and logs, which is why no other route
    reads it."""
    _check_order_access(order_id, request, credentials, in_query)


def _check_order_access(
    order_id: UUID,
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    in_query: str | None = None,
) -> None:
    settings = _settings(request)
    if not isinstance(settings, OrderTokenSettings):
        raise TypeError("OrderAccess needs settings that mix in OrderTokenSettings")
    if settings.order_token_secret is None:
        return
    token = in_query if credentials is None and in_query else _token(credentials)
    try:
        granted = _order_of(token, settings.order_token_secret)
    except jwt.InvalidTokenError as not_an_order_token:
        refusals = [not_an_order_token]
    else:
        if granted == order_id:
            return
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "this token is for another order",
            headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
        )
    operator_key: OperatorPublicKey | None = settings.operator_token_public_key
    if operator_key is not None:
        try:
            operator_key.verify(token)
            return
        except jwt.InvalidTokenError as not_an_operator_token:
            refusals.append(not_an_operator_token)
    raise _refused(request, *refusals)


OperatorOnly = Depends(require_operator)
"""For `dependencies=[OperatorOnly]` on an operator router or route, with
`responses=OPERATOR_ONLY_RESPONSES`."""
OrderAccess = Depends(require_order_access)
"""For `dependencies=[OrderAccess]` on a route whose path has `{order_id}`, with
`responses=ORDER_ACCESS_RESPONSES`."""
OrderAccessInQuery = Depends(require_order_access_in_query)
"""`OrderAccess` that also takes the token from `?access_token=`: for an event stream alone."""

OPERATOR_ONLY_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No operator token, or one that is invalid or expired"}
}
ORDER_ACCESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No token, or one that is invalid or expired"},
    403: {"description": "The token of another order"},
}
