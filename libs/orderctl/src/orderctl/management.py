"""The RabbitMQ management HTTP API, for what AMQP cannot do: list queues, exchanges and
bindings. Needs the `rabbitmq_management` plugin and a user tagged to use it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from .errors import CommandError
from .text import redact

MANAGEMENT_PORT = 15672
MANAGEMENT_URL_VARIABLE = "RABBITMQ_MANAGEMENT_URL"
REQUEST_TIMEOUT = 10.0


def default_management_url(amqp_url: str) -> str:
    """`http://<amqp host>:15672/` with the AMQP URL's credentials and virtual host."""
    parts = urlsplit(amqp_url)
    credentials = f"{parts.username or 'guest'}:{parts.password or 'guest'}@"
    vhost = parts.path if len(parts.path) > 1 else "/"
    return f"http://{credentials}{parts.hostname or '127.0.0.1'}:{MANAGEMENT_PORT}{vhost}"


@dataclass(frozen=True)
class ListedQueue:
    name: str
    arguments: dict[str, Any]
    ready: int
    unacknowledged: int
    consumers: int

    @property
    def messages(self) -> int:
        """Ready and unacknowledged: what deleting the queue would lose."""
        return self.ready + self.unacknowledged


@dataclass(frozen=True)
class ListedBinding:
    source: str
    destination: str
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Listing:
    """One service's queues, exchanges and bindings (those touching its names)."""

    queues: dict[str, ListedQueue]
    exchanges: dict[str, str]
    """Name -> type."""
    bindings: list[ListedBinding]

    def bindings_to(self, queue: str) -> list[ListedBinding]:
        return [binding for binding in self.bindings if binding.destination == queue]


class ManagementApi:
    """The management API of one virtual host: the URL's path, `/` when it has none."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        port = f":{parts.port}" if parts.port else ""
        self._shown = redact(url)
        self._client = httpx.AsyncClient(
            base_url=f"{parts.scheme}://{parts.hostname}{port}/api/",
            auth=(unquote(parts.username or "guest"), unquote(parts.password or "guest")),
            timeout=REQUEST_TIMEOUT,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def listing(self, prefix: str) -> Listing:
        """Every queue and exchange named `<prefix>...`, and every binding from or to one."""
        queues = await self._get(
            "queues",
            columns="name,arguments,messages_ready,messages_unacknowledged,consumers",
        )
        exchanges = await self._get("exchanges", columns="name,type")
        bindings = await self._get("bindings")
        return Listing(
            queues={
                queue["name"]: ListedQueue(
                    queue["name"],
                    queue.get("arguments") or {},
                    queue.get("messages_ready") or 0,
                    queue.get("messages_unacknowledged") or 0,
                    queue.get("consumers") or 0,
                )
                for queue in queues
                if queue["name"].startswith(prefix)
            },
            exchanges={e["name"]: e["type"] for e in exchanges if e["name"].startswith(prefix)},
            bindings=[
                ListedBinding(b["source"], b["destination"], b["routing_key"], b["arguments"])
                for b in bindings
                if b["destination_type"] == "queue"
                and b["source"]  # the default exchange's implicit binding of every queue
                and (b["source"].startswith(prefix) or b["destination"].startswith(prefix))
            ],
        )

    async def queue_names(self, service: str) -> list[str]:
        """The names of the service's queues, `<service>.*`."""
        queues = await self._get("queues", columns="name")
        return [queue["name"] for queue in queues if queue["name"].startswith(f"{service}.")]

    async def queue(self, name: str) -> ListedQueue | None:
        """One queue's figures as the broker's statistics have them (they lag by seconds)."""
        response = await self._request("GET", f"queues/{self._quoted_vhost}/{quote(name, '')}")
        if response.status_code == 404:
            return None
        self._raise_for(response)
        found = response.json()
        return ListedQueue(
            name,
            found.get("arguments") or {},
            found.get("messages_ready") or 0,
            found.get("messages_unacknowledged") or 0,
            found.get("consumers") or 0,
        )

    async def _get(self, collection: str, **params: str) -> list[dict[str, Any]]:
        response = await self._request("GET", f"{collection}/{self._quoted_vhost}", params)
        if response.status_code == 404:
            raise CommandError(f"virtual host {self._vhost!r} not found at {self._shown}")
        self._raise_for(response)
        return response.json()

    @property
    def _quoted_vhost(self) -> str:
        return quote(self._vhost, safe="")

    async def _request(
        self, method: str, path: str, params: dict[str, str] | None = None
    ) -> httpx.Response:
        try:
            return await self._client.request(method, path, params=params)
        except httpx.HTTPError as exc:
            raise CommandError(
                f"cannot reach the RabbitMQ management API at {self._shown}: {exc} "
                "(is the rabbitmq_management plugin enabled?)"
            ) from exc

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code in (401, 403):
            raise CommandError(
                f"the RabbitMQ management API at {self._shown} refused this user "
                f"({response.status_code}): it needs the management tag"
            )
        if response.is_error:
            raise CommandError(
                f"the RabbitMQ management API at {self._shown} answered "
                f"{response.status_code}: {response.text[:200]}"
            )


@asynccontextmanager
async def management_api(url: str) -> AsyncIterator[ManagementApi]:
    api = ManagementApi(url)
    try:
        yield api
    finally:
        await api.close()
