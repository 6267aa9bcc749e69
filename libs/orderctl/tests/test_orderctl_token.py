"""`orderctl token`: an operator token from the operator's private key, which the services'
public key verifies, for as long as `--ttl` says."""

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from orderctl.cli import app
from orderctl.credentials import duration
from servicekit.auth import OperatorPublicKey

runner = CliRunner()


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[Path, OperatorPublicKey]:
    """The private key's file, as openssl writes it, and what a service makes of its public
    half."""
    key = Ed25519PrivateKey.generate()
    private = tmp_path / "operator.key"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, OperatorPublicKey(public.decode())


def test_the_token_is_one_the_services_accept_for_as_long_as_asked(key_pair) -> None:
    private, public = key_pair
    done = runner.invoke(
        app, ["token", "--private-key", str(private), "--ttl", "15m", "--subject", "ada"]
    )
    assert done.exit_code == 0, done.output
    claims = public.verify(done.output.strip())
    assert (claims["sub"], claims["exp"] - claims["iat"]) == ("ada", 900)


def test_the_private_key_may_come_from_the_environment(key_pair) -> None:
    private, public = key_pair
    done = runner.invoke(app, ["token"], env={"ORDERCTL_PRIVATE_KEY": str(private)})
    assert done.exit_code == 0, done.output
    assert public.verify(done.output.strip())["sub"] == "operator"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("8h", 28800), ("7d", 604800), ("120", 120)]
)
def test_a_ttl_is_a_number_and_a_unit(text: str, seconds: int) -> None:
    assert duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0", "1w", "-5m", "", "1.5h"])
def test_a_ttl_that_is_no_duration_is_a_usage_error(key_pair, text: str) -> None:
    done = runner.invoke(app, ["token", "--private-key", str(key_pair[0]), "--ttl", text])
    assert done.exit_code == 2
    assert "is not a duration" in done.output


def test_a_public_key_or_a_missing_file_fails_in_one_line(key_pair, tmp_path: Path) -> None:
    public = tmp_path / "operator.pub"
    public.write_text("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n")
    for path, message in [
        (public, "not a private key"),
        (tmp_path / "missing.key", "cannot read the private key"),
    ]:
        done = runner.invoke(app, ["token", "--private-key", str(path)])
        assert done.exit_code == 2
        assert message in done.output and len(done.output.strip().splitlines()) == 1
