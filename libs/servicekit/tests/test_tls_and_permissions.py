"""TLS towards RabbitMQ and PostgreSQL from the settings, and the broker permissions each
service is provisioned with. No TLS server is needed: the local servers speak plain TCP, so
a connection that tries TLS fails in a way that shows it tried."""

import re
import ssl

import asyncpg
import certifi
import pytest
from pydantic import ValidationError

from servicekit.db import create_pool, ensure_database
from servicekit.service import ServiceSpec, build_app
from servicekit.settings import ServiceSettings
from servicekit.topology import (
    ServiceTopology,
    backoff_exchange_name,
    broker_permissions,
    redeliver_exchange_name,
)
from testkit.servers import Infrastructure


class TlsSettings(ServiceSettings):
    database_url: str = "postgresql://postgres@127.0.0.1/example"
    http_port: int = 9000


def test_plain_amqp_has_no_tls_context() -> None:
    assert TlsSettings().rabbitmq_ssl_context() is None


def test_amqps_verifies_the_broker_against_the_ca_file() -> None:
    settings = TlsSettings(
        rabbitmq_url="amqps://orders:s3cret@rabbit.example:5671/orderflow",
        rabbitmq_ca_file=certifi.where(),
    )
    context = settings.rabbitmq_ssl_context()
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # the bundle's CAs, loaded


def test_a_ca_file_without_amqps_is_refused() -> None:
    with pytest.raises(ValidationError, match="must be amqps://"):
        TlsSettings(rabbitmq_ca_file=certifi.where())


def test_a_missing_ca_file_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="rabbitmq_ca_file"):
        TlsSettings(rabbitmq_url="amqps://u:p@rabbit/", rabbitmq_ca_file="/nonexistent/ca.pem")


async def test_the_service_broker_speaks_tls_for_an_amqps_url(
    infrastructure: Infrastructure,
) -> None:
    """The local broker listens for plain AMQP: a TLS handshake with it fails."""
    plain = infrastructure.rabbitmq_url
    settings = TlsSettings(rabbitmq_url=plain.replace("amqp://", "amqps://", 1))
    app = build_app(ServiceSpec(name="tls-probe", settings=settings, routers=[], handlers={}))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await app.state.runtime.broker.connect()


@pytest.mark.parametrize("open_with", ["connect", "pool", "ensure_database"])
async def test_asyncpg_takes_tls_from_the_database_url(
    infrastructure: Infrastructure, open_with: str
) -> None:
    """`sslmode` asks for TLS (refused by the local server); `sslrootcert` is read."""

    async def open_database(url: str) -> None:
        if open_with == "connect":
            await (await asyncpg.connect(url)).close()
        elif open_with == "pool":
            await (await create_pool(url, max_size=1)).close()
        else:
            await ensure_database(url)

    database = f"{infrastructure.postgres_url}/postgres"
    with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
        await open_database(f"{database}?sslmode=require")
    with pytest.raises(FileNotFoundError):
        await open_database(f"{database}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")


def names_allowed(pattern: str, names: list[str]) -> set[str]:
    return {name for name in names if re.fullmatch(pattern, name)}


def test_a_service_may_configure_and_read_only_its_own_queues_and_exchanges() -> None:
    topology = ServiceTopology("inventory", ("order.created.v2",))
    own = [
        *(q.name for q in topology.all_queues),
        topology.dead_letter_exchange.name,
        backoff_exchange_name("inventory"),
        topology.backoff_routing_exchange,
        redeliver_exchange_name("inventory"),
    ]
    others = ["orders.work", "orders.dlx", "inventoryx.work", "inventory", "events.x"]
    configure, write, read = broker_permissions("inventory")
    candidates = [*own, *others, "events", "amq.default"]
    assert names_allowed(configure, candidates) == set(own)
    assert names_allowed(read, candidates) == {*own, "events"}
    assert names_allowed(write, candidates) == {*own, "events", "amq.default"}


def test_a_service_name_is_matched_literally() -> None:
    """A dot in a name is no wildcard: `a.b` may not reach `axb.work`."""
    configure, _, _ = broker_permissions("a.b")
    assert names_allowed(configure, ["a.b.work", "axb.work"]) == {"a.b.work"}
