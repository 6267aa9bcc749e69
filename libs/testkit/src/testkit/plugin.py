"""Pytest plugin (`-p testkit.plugin`): real servers for every suite, isolated per test module."""

from collections.abc import Iterator

import pytest

from . import servers, smtp
from .servers import Databases, Infrastructure, Vhost
from .smtp import SmtpSink


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    """RabbitMQ and PostgreSQL for the whole run (see `testkit.servers` for where from)."""
    with servers.servers() as infra:
        yield infra


@pytest.fixture(scope="module")
def rabbitmq(infrastructure: Infrastructure) -> Iterator[Vhost]:
    """A RabbitMQ virtual host for this test module alone."""
    with servers.vhost(infrastructure) as vhost:
        yield vhost


@pytest.fixture(scope="module")
def databases(infrastructure: Infrastructure) -> Iterator[Databases]:
    """Database URLs for this test module alone; the services create the databases."""
    dbs = Databases(infrastructure.postgres_url)
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="module")
def smtp_sink() -> Iterator[SmtpSink]:
    """An in-process SMTP server that keeps what it receives."""
    with smtp.smtp_sink() as sink:
        yield sink
