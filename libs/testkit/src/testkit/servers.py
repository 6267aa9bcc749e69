"""Real RabbitMQ and PostgreSQL, isolated per test module.

Where the servers come from, in order:
1. RABBITMQ_URL / POSTGRES_URL when set (CI sets them to the servers it runs);
2. testcontainers (rabbitmq:3.10-management, postgres:15) where a Docker engine answers;
3. the local defaults, amqp://guest:guest@127.0.0.1:5672/ and postgresql://postgres@127.0.0.1:5432.

Each test module gets a RabbitMQ virtual host of its own and databases with a prefix of its
own, both removed afterwards, so suites never see each other's queues, messages or rows.
The broker is administered with `rabbitmqctl` (RABBITMQCTL overrides the command, e.g.
`docker exec my-rabbit rabbitmqctl`).
"""

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import asyncpg
from yarl import URL

DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"


@dataclass
class Infrastructure:
    rabbitmq_url: str
    postgres_url: str
    rabbitmqctl: list[str]

    def ctl(self, *args: str, timeout: float = 60) -> str:
        result = subprocess.run(
            [*self.rabbitmqctl, *args], capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def vhost_url(self, vhost: str) -> str:
        return str(URL(self.rabbitmq_url).with_path("/" + vhost, encoded=False))

    def stop_broker(self) -> None:
        self.ctl("stop_app")

    def start_broker(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup")


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
    return probe.returncode == 0


@contextlib.contextmanager
def _containers() -> Iterator[Infrastructure]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.postgres import PostgresContainer

    rabbit = DockerContainer("rabbitmq:3.10-management").with_exposed_ports(5672)
    postgres = PostgresContainer("postgres:15", driver=None)
    with rabbit, postgres:
        wait_for_logs(rabbit, "Server startup complete", timeout=120)
        host, port = rabbit.get_container_host_ip(), rabbit.get_exposed_port(5672)
        pg = URL(postgres.get_connection_url())
        yield Infrastructure(
            rabbitmq_url=f"amqp://guest:guest@{host}:{port}/",
            postgres_url=str(pg.with_path("")),
            rabbitmqctl=["docker", "exec", rabbit.get_wrapped_container().id, "rabbitmqctl"],
        )


@contextlib.contextmanager
def servers() -> Iterator[Infrastructure]:
    """The servers the tests run against, from the first source above that applies."""
    ctl = shlex.split(os.environ.get("RABBITMQCTL", "rabbitmqctl"))
    if "RABBITMQ_URL" in os.environ or "POSTGRES_URL" in os.environ or not _docker_available():
        yield Infrastructure(
            rabbitmq_url=os.environ.get("RABBITMQ_URL", DEFAULT_RABBITMQ_URL),
            postgres_url=os.environ.get("POSTGRES_URL", DEFAULT_POSTGRES_URL).rstrip("/"),
            rabbitmqctl=ctl,
        )
    else:
        with _containers() as infra:
            yield infra


@dataclass
class Vhost:
    name: str
    url: str
    infrastructure: Infrastructure

    def queue_counts(self) -> dict[str, dict[str, int]]:
        """Each queue's ready and unacknowledged messages and its consumers, as the broker
        counts them."""
        listed = self.infrastructure.ctl(
            "list_queues", "-p", self.name,
            "name", "messages_ready", "messages_unacknowledged", "consumers",
            "--formatter", "json",
        )  # fmt: skip
        return {queue.pop("name"): queue for queue in json.loads(listed)}


@contextlib.contextmanager
def vhost(infrastructure: Infrastructure) -> Iterator[Vhost]:
    """A fresh RabbitMQ virtual host, deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    user = URL(infrastructure.rabbitmq_url).user or "guest"
    infrastructure.ctl("add_vhost", name)
    infrastructure.ctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    try:
        yield Vhost(name, infrastructure.vhost_url(name), infrastructure)
    finally:
        with contextlib.suppress(RuntimeError):  # the broker may be down if a test failed midway
            infrastructure.ctl("delete_vhost", name)


@dataclass
class Databases:
    """Creates databases named `<prefix><name>`; drops all of them at the end."""

    postgres_url: str
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}_")

    def url(self, name: str) -> str:
        return f"{self.postgres_url}/{self.prefix}{name}"

    def drop_all(self) -> None:
        async def drop() -> None:
            admin = await asyncpg.connect(f"{self.postgres_url}/postgres")
            try:
                names = await admin.fetch(
                    "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", self.prefix
                )
                for row in names:
                    await admin.execute(f'DROP DATABASE "{row["datname"]}" WITH (FORCE)')
            finally:
                await admin.close()

        asyncio.run(drop())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
