"""Operator and order tokens on a service app built as every service's is, asked in memory
(httpx's ASGI transport): production with its keys, development without them (open) and
with them (checked), and every way a token can be wrong."""

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from servicekit.auth import (
    LEEWAY,
    OPERATOR_AUDIENCE,
    ORDER_AUDIENCE,
    OperatorOnly,
    OrderAccess,
    OrderAccessInQuery,
    OrderTokenSettings,
    mint_operator_token,
    mint_order_token,
)
from servicekit.service import ServiceSpec, build_app
from servicekit.settings import ServiceSettings

ORDER_SECRET = "s" * 64
PRODUCTION_BROKER = "amqp://shop:s3cret@rabbit/"


class ShopSettings(ServiceSettings, OrderTokenSettings):
    """A service serving both kinds of route, as orders does."""

    model_config = SettingsConfigDict(env_prefix="AUTHTEST_")

    database_url: str = "postgresql://postgres@127.0.0.1/authtest"
    http_port: int = 9000


class Keys:
    """An operator key pair in PEM, and a token minted as `orderctl token` mints it."""

    def __init__(self) -> None:
        key = Ed25519PrivateKey.generate()
        self.private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.public = public_pem(key)

    def operator_token(self, ttl: timedelta = timedelta(minutes=5)) -> str:
        return mint_operator_token(self.private, ttl, "ada")

    def signed(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private, algorithm="EdDSA")


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


router = APIRouter()


@router.get("/stock", dependencies=[OperatorOnly])
async def operator_route() -> dict[str, str]:
    return {"who": "operator"}


@router.get("/orders/{order_id}", dependencies=[OrderAccess])
async def order_route(order_id: uuid.UUID) -> dict[str, str]:
    return {"order_id": str(order_id)}


@router.get("/orders/{order_id}/events", dependencies=[OrderAccessInQuery])
async def stream_route(order_id: uuid.UUID) -> dict[str, str]:
    return {"streaming": str(order_id)}


@router.post("/orders/{order_id}/cancel", dependencies=[OrderAccess])
async def cancel_route(order_id: uuid.UUID) -> dict[str, str]:
    return {"cancelled": str(order_id)}


@router.get("/availability")
async def public_route() -> dict[str, str]:
    return {"who": "anyone"}


def client(settings: ShopSettings) -> httpx.AsyncClient:
    app = build_app(ServiceSpec(name="authtest", settings=settings, routers=[router], handlers={}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop")


def production(keys: Keys, **overrides: Any) -> ShopSettings:
    return ShopSettings(
        environment="production",
        rabbitmq_url=PRODUCTION_BROKER,
        operator_token_public_key=keys.public,
        order_token_secret=ORDER_SECRET,
        **overrides,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def order_token(order_id: uuid.UUID, **changes: Any) -> str:
    """An order token as orders mints it; `changes` to its claims (None drops one), or
    `secret`/`algorithm` to sign it otherwise."""
    secret = changes.pop("secret", ORDER_SECRET)
    algorithm = changes.pop("algorithm", "HS256")
    now = datetime.now(UTC)
    claims = {"sub": str(order_id), "aud": ORDER_AUDIENCE, "iat": now, "exp": now + timedelta(1)}
    claims = {k: v for k, v in {**claims, **changes}.items() if v is not None}
    return jwt.encode(claims, secret, algorithm=algorithm)


def unsigned(claims: dict[str, Any]) -> str:
    """A token with `alg: none`, the oldest trick."""
    return jwt.encode(claims, None, algorithm="none")


def part(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def hs256_with_the_public_key(keys: Keys, claims: dict[str, Any]) -> str:
    """HS256 keyed with the public key's PEM: accepted by a verifier that takes the
    algorithm from the header (PyJWT refuses to sign it, so it is built by hand)."""
    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}"
    mac = hmac.new(keys.public.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def operator_claims(**changes: Any) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    claims = {"sub": "ada", "aud": OPERATOR_AUDIENCE, "iat": now, "exp": now + 300}
    return {k: v for k, v in {**claims, **changes}.items() if v is not None}


def tampered(token: str) -> str:
    """The same token with one signature bit flipped."""
    head, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[0] ^= 1
    return f"{head}.{payload}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


def assert_unauthorized(response: httpx.Response, error: bool = True) -> None:
    """401, saying Bearer, and nothing about why beyond a short line."""
    assert response.status_code == 401, response.text
    expected = 'Bearer error="invalid_token"' if error else "Bearer"
    assert response.headers["WWW-Authenticate"] == expected
    assert response.json()["detail"] in ("invalid or expired token", "a bearer token is required")


# Production, keys configured


async def test_production_opens_an_operator_route_to_an_operator_token_only(keys: Keys) -> None:
    async with client(production(keys)) as shop:
        assert_unauthorized(await shop.get("/stock"), error=False)
        assert (await shop.get("/stock", headers=bearer(keys.operator_token()))).json() == {
            "who": "operator"
        }
        assert_unauthorized(await shop.get("/stock", headers=bearer(order_token(uuid.uuid4()))))
        basic = {"Authorization": "Basic " + base64.b64encode(b"ada:secret").decode()}
        assert_unauthorized(await shop.get("/stock", headers=basic), error=False)
        assert (await shop.get("/availability")).status_code == 200


async def test_health_and_metrics_stay_open_in_production(keys: Keys) -> None:
    async with client(production(keys)) as shop:
        assert (await shop.get("/health/live")).status_code == 200
        assert (await shop.get("/metrics")).status_code == 200


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda keys: keys.signed(operator_claims(aud=ORDER_AUDIENCE)), id="wrong-aud"),
        pytest.param(lambda keys: keys.signed(operator_claims(aud=None)), id="no-aud"),
        pytest.param(
            lambda keys: keys.signed(operator_claims(aud=[OPERATOR_AUDIENCE, "other"])),
            id="aud-list",
        ),
        pytest.param(lambda keys: keys.signed(operator_claims(exp=None)), id="no-exp"),
        pytest.param(
            lambda keys: keys.operator_token(ttl=-LEEWAY - timedelta(seconds=5)), id="expired"
        ),
        pytest.param(lambda keys: unsigned(operator_claims()), id="alg-none"),
        pytest.param(lambda keys: hs256_with_the_public_key(keys, operator_claims()), id="hs256"),
        pytest.param(lambda keys: tampered(keys.operator_token()), id="tampered-signature"),
        pytest.param(lambda keys: Keys().operator_token(), id="another-key"),
        pytest.param(lambda keys: "not.a.token", id="garbage"),
    ],
)
async def test_an_operator_route_refuses_a_token_that_is_not_valid(keys: Keys, forge) -> None:
    async with client(production(keys)) as shop:
        assert_unauthorized(await shop.get("/stock", headers=bearer(forge(keys))))


async def test_a_token_just_past_its_expiry_is_within_the_leeway(keys: Keys) -> None:
    late = keys.operator_token(ttl=-timedelta(seconds=5))
    async with client(production(keys)) as shop:
        assert (await shop.get("/stock", headers=bearer(late))).status_code == 200


async def test_an_order_is_open_to_its_own_token_and_an_operators(keys: Keys) -> None:
    order_id = uuid.uuid4()
    settings = production(keys)
    own = bearer(mint_order_token(settings, order_id))
    read, cancel = f"/orders/{order_id}", f"/orders/{order_id}/cancel"
    async with client(settings) as shop:
        assert (await shop.get(read, headers=own)).json() == {"order_id": str(order_id)}
        assert (await shop.get(read, headers=bearer(keys.operator_token()))).status_code == 200
        assert_unauthorized(await shop.get(read), error=False)
        assert (await shop.post(cancel, headers=own)).status_code == 200
        assert_unauthorized(await shop.post(cancel), error=False)


async def test_a_stream_takes_the_token_in_the_query_too_and_no_other_route_does(
    keys: Keys,
) -> None:
    order_id = uuid.uuid4()
    settings = production(keys)
    own = {"access_token": mint_order_token(settings, order_id)}
    stream = f"/orders/{order_id}/events"
    async with client(settings) as shop:
        assert (await shop.get(stream, params=own)).json() == {"streaming": str(order_id)}
        operator = {"access_token": keys.operator_token()}
        assert (await shop.get(stream, params=operator)).status_code == 200
        assert (await shop.get(stream, headers=bearer(own["access_token"]))).status_code == 200
        assert_unauthorized(await shop.get(stream), error=False)
        assert_unauthorized(
            await shop.get(stream, params={"access_token": tampered(own["access_token"])})
        )
        theirs = {"access_token": order_token(uuid.uuid4())}
        assert (await shop.get(stream, params=theirs)).status_code == 403
        assert_unauthorized(await shop.get(f"/orders/{order_id}", params=own), error=False)


async def test_a_stream_prefers_the_header_to_the_query(keys: Keys) -> None:
    order_id = uuid.uuid4()
    stream = f"/orders/{order_id}/events"
    async with client(production(keys)) as shop:
        answer = await shop.get(
            stream,
            params={"access_token": order_token(order_id)},
            headers=bearer(order_token(uuid.uuid4())),
        )
        assert answer.status_code == 403, answer.text


async def test_another_orders_token_is_forbidden(keys: Keys) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    async with client(production(keys)) as shop:
        for response in (
            await shop.get(f"/orders/{theirs}", headers=bearer(order_token(mine))),
            await shop.post(f"/orders/{theirs}/cancel", headers=bearer(order_token(mine))),
        ):
            assert response.status_code == 403, response.text
            assert response.json() == {"detail": "this token is for another order"}


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"exp": datetime.now(UTC) - LEEWAY - timedelta(seconds=5)}, id="expired"),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"aud": OPERATOR_AUDIENCE}, id="wrong-aud"),
        pytest.param({"secret": "t" * 32}, id="another-secret"),
        pytest.param({"algorithm": "HS512"}, id="another-algorithm"),
        pytest.param({"sub": None}, id="no-sub"),
        pytest.param({"sub": "not-an-order-id"}, id="sub-not-a-uuid"),
    ],
)
async def test_an_order_route_refuses_an_order_token_that_is_not_valid(
    keys: Keys, changes: dict[str, Any]
) -> None:
    order_id = uuid.uuid4()
    async with client(production(keys)) as shop:
        forged = order_token(order_id, **changes)
        assert_unauthorized(await shop.get(f"/orders/{order_id}", headers=bearer(forged)))


async def test_an_order_route_refuses_an_unsigned_or_tampered_token(keys: Keys) -> None:
    order_id = uuid.uuid4()
    claims = {"sub": str(order_id), "aud": ORDER_AUDIENCE, "exp": 2**31}
    async with client(production(keys)) as shop:
        for token in (unsigned(claims), tampered(order_token(order_id))):
            assert_unauthorized(await shop.get(f"/orders/{order_id}", headers=bearer(token)))


# Development


async def test_development_without_keys_is_open_and_mints_no_order_token() -> None:
    settings = ShopSettings()
    assert mint_order_token(settings, uuid.uuid4()) is None
    async with client(settings) as shop:
        assert (await shop.get("/stock")).status_code == 200
        assert (await shop.get(f"/orders/{uuid.uuid4()}")).status_code == 200
        assert (await shop.post(f"/orders/{uuid.uuid4()}/cancel")).status_code == 200


async def test_development_checks_what_it_has_keys_for(keys: Keys) -> None:
    order_id = uuid.uuid4()
    settings = ShopSettings(operator_token_public_key=keys.public, order_token_secret=ORDER_SECRET)
    async with client(settings) as shop:
        assert_unauthorized(await shop.get("/stock"), error=False)
        assert (await shop.get("/stock", headers=bearer(keys.operator_token()))).status_code == 200
        assert_unauthorized(await shop.get(f"/orders/{order_id}"), error=False)
        own = bearer(mint_order_token(settings, order_id))
        assert (await shop.get(f"/orders/{order_id}", headers=own)).status_code == 200


async def test_development_with_the_operator_key_alone_leaves_orders_open(keys: Keys) -> None:
    async with client(ShopSettings(operator_token_public_key=keys.public)) as shop:
        assert_unauthorized(await shop.get("/stock"), error=False)
        assert (await shop.get(f"/orders/{uuid.uuid4()}")).status_code == 200


# Settings: what a service refuses to start with


def test_production_refuses_to_start_without_the_operator_key() -> None:
    with pytest.raises(ValidationError, match="AUTHTEST_OPERATOR_TOKEN_PUBLIC_KEY"):
        ShopSettings(
            environment="production",
            rabbitmq_url=PRODUCTION_BROKER,
            order_token_secret=ORDER_SECRET,
        )


def test_production_refuses_to_start_without_the_order_token_secret(keys: Keys) -> None:
    with pytest.raises(ValidationError, match="AUTHTEST_ORDER_TOKEN_SECRET") as refused:
        ShopSettings(
            environment="production",
            rabbitmq_url=PRODUCTION_BROKER,
            operator_token_public_key=keys.public,
        )
    assert "PUBLIC KEY" not in str(refused.value), "a refused setting is named, not echoed"


def test_a_short_order_token_secret_is_refused_without_being_echoed() -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes") as refused:
        ShopSettings(order_token_secret="hunter2hunter2")
    assert "hunter2" not in str(refused.value)


def test_the_operator_key_is_read_from_a_file_once(keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "operator.pub"
    path.write_text(keys.public)
    key = ShopSettings(operator_token_public_key=str(path)).operator_token_public_key
    path.unlink()  # parsed at start-up: nothing is read per request
    assert key.verify(keys.operator_token())["sub"] == "ada"


@pytest.fixture
def ec_public_key() -> str:
    return public_pem(ec.generate_private_key(ec.SECP256R1()))


@pytest.mark.parametrize(
    ("value", "refusal"),
    [
        pytest.param(lambda keys, ec_key: keys.private, "private key", id="the-private-key"),
        pytest.param(lambda keys, ec_key: ec_key, "not an Ed25519 public key", id="an-ec-key"),
        pytest.param(lambda keys, ec_key: "/nonexistent/operator.pub", "cannot read", id="no-file"),
        pytest.param(lambda keys, ec_key: "  ", "empty", id="empty"),
    ],
)
def test_an_operator_key_that_is_not_an_ed25519_public_key_is_refused(
    keys: Keys, ec_public_key: str, value, refusal: str
) -> None:
    with pytest.raises(ValidationError, match=refusal):
        ShopSettings(operator_token_public_key=value(keys, ec_public_key))


def test_minting_refuses_a_public_key(keys: Keys) -> None:
    with pytest.raises(ValueError, match="not a private key"):
        mint_operator_token(keys.public, timedelta(minutes=5), "ada")


def test_an_order_token_names_its_order_and_lasts_the_configured_ttl(keys: Keys) -> None:
    order_id = uuid.uuid4()
    settings = ShopSettings(order_token_secret=ORDER_SECRET, order_token_ttl=timedelta(hours=2))
    claims = jwt.decode(
        mint_order_token(settings, order_id),
        ORDER_SECRET,
        algorithms=["HS256"],
        audience=ORDER_AUDIENCE,
    )
    assert claims["sub"] == str(order_id)
    assert claims["exp"] - claims["iat"] == 7200
