"""The system as `make run` starts it: four service processes and the SMTP sink."""

import asyncio
import mailbox
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack import Stack, StackConfig
from orderctl.audit import AuditConfig, AuditReport, audit
from orderctl.errors import CommandError
from servicekit.registry import SERVICES
from testkit.servers import Databases, Vhost

ADDRESS = {
    "name": "Ada",
    "line1": "1 Main St",
    "city": "Paris",
    "postal_code": "75001",
    "country": "FR",
}


class RunningSystem:
    def __init__(self, stack: Stack, rabbitmq: Vhost, databases: Databases) -> None:
        self.stack = stack
        self.rabbitmq = rabbitmq
        self.databases = databases
        self.http = {
            instance: httpx.AsyncClient(base_url=stack.url(instance), timeout=10)
            for instance in stack.config.instances()
        }
        """A client for each service process, by instance name; `system.orders` is replica 1."""
        self.operator_token: str | None = None
        """Sent by the audit; a module whose services check tokens sets it (and the clients'
        `Authorization` header)."""

    def __getattr__(self, service: str) -> httpx.AsyncClient:
        try:
            return self.http[service]
        except KeyError:
            raise AttributeError(service) from None

    def mails_about(self, text: str) -> list:
        """Emails the SMTP sink received that mention `text`."""
        path = self.stack.config.mbox
        if not path.exists():
            return []
        return [m for m in mailbox.mbox(path) if text in (m["Subject"] or "")]

    async def order_request(
        self, *lines: tuple[str, int], idempotency_key: str | None = None
    ) -> httpx.Response:
        """POST /orders for (sku, quantity) lines, each named `Product <sku>`."""
        return await self.orders.post(
            "/orders",
            json={
                "customer_email": "ada@example.com",
                "customer_name": "Ada Lovelace",
                "items": [
                    {"sku": s, "name": f"Product {s}", "quantity": q, "unit_price": "2.50"}
                    for s, q in lines
                ],
                "shipping_address": ADDRESS,
            },
            headers={"Idempotency-Key": idempotency_key} if idempotency_key else {},
        )

    async def place(self, *lines: tuple[str, int]) -> str:
        """Place an order for (sku, quantity) lines; its id."""
        response = await self.order_request(*lines)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "pending"
        return response.json()["order_id"]

    async def order(self, order_id: str) -> dict:
        response = await self.orders.get(f"/orders/{order_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def settled(self, order_id: str, status: str | None = None) -> dict | None:
        """What every service did for one order, once all four have reacted to its latest
        status (in `status`, if given) as the audit expects; else None."""
        order = await self.order(order_id)
        if order["status"] == "pending" or status not in (None, order["status"]):
            return None
        if any(p.kind.per_order for p in (await self.audit(order_id)).problems):
            return None
        reservation = await self.inventory.get(f"/reservations/{order_id}")
        emails = (await self.email.get("/emails", params={"order_id": order_id})).json()
        shipments = (await self.shipping.get("/shipments", params={"order_id": order_id})).json()
        return {
            "status": order["status"],
            "order": order,
            "reservation": reservation.json()["status"],
            "emails": emails,
            "email_kinds": sorted(email["kind"] for email in emails),
            "shipments": shipments,
            "mails": [mail["Message-ID"] for mail in self.mails_about(order_id)],
        }

    async def audit(self, order_id: str | None = None) -> AuditReport:
        """What `orderctl audit` reports for this system, asking its services over HTTP.

        A service that cannot answer yet (restarting, its database back a moment ago) is an
        AssertionError, so that `eventually` polls on."""
        config = AuditConfig.from_env(
            service_urls={s.name: self.stack.url(s.name) for s in SERVICES},
            amqp_url=self.rabbitmq.url,
            token=self.operator_token,
            env={},
        )
        try:
            return await audit(config, order_id)
        except CommandError as exc:
            raise AssertionError(f"the audit could not run: {exc}") from exc

    async def audit_is_clean(self) -> AuditReport:
        """The audit once it finds nothing wrong; raises AssertionError with what it found."""
        report = await self.audit()
        assert report.ok, [f"{p.kind} {p.subject}: {p.detail}" for p in report.problems]
        return report

    async def orderctl(
        self, *command: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        """Run `orderctl <command>` as an operator would, at this system's broker."""
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "orderctl", *command],
            env={"RABBITMQ_URL": self.rabbitmq.url, "COLUMNS": "200", "PATH": "", **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    async def replay_dead_letters(self, service: str) -> str:
        """Run `orderctl dlq replay <service> --all --yes` as an operator would; its output."""
        replay = await self.orderctl("dlq", "replay", service, "--all", "--yes")
        assert replay.returncode == 0, replay.stderr
        return replay.stdout

    async def metrics(self, service: str) -> dict[tuple[str, tuple], float]:
        """The service's `GET /metrics`, parsed: (sample name, sorted labels) -> value."""
        response = await self.http[service].get("/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    async def readiness(self, service: str) -> dict:
        response = await self.http[service].get("/health/ready")
        return {"status_code": response.status_code, **response.json()}

    async def stock(self, sku: str) -> dict:
        return (await self.inventory.get(f"/stock/{sku}")).json()

    async def all_ready(self) -> bool:
        return all(
            [
                (await client.get("/health/ready")).status_code == 200
                for client in self.http.values()
            ]
        )

    def logs(self) -> str:
        run_dir = self.stack.config.run_dir
        return "\n".join(
            f"----- {log.name} -----\n"
            + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            for log in sorted(run_dir.glob("*.log"))
        )


@pytest.fixture(scope="module")
def service_env(request) -> dict[str, str]:
    """Extra environment for the module's system: its `SERVICE_ENV` (e.g. shorter retry
    delays); a module needing values known only at run time overrides this fixture."""
    return getattr(request.module, "SERVICE_ENV", {})


@pytest.fixture(scope="module")
def replicas(request) -> int:
    """Processes of each service in the module's system: its `REPLICAS`, else 1."""
    return getattr(request.module, "REPLICAS", 1)


@pytest.fixture(scope="module")
def system(service_env, replicas, rabbitmq, databases, tmp_path_factory) -> Iterator[RunningSystem]:
    """Start every service as its own process, exactly as `make run` does; stop them after."""
    config = StackConfig.beside_others(
        rabbitmq_url=rabbitmq.url,
        postgres_url=databases.postgres_url,
        database_prefix=databases.prefix,
        run_dir=tmp_path_factory.mktemp("stack"),
        service_env=service_env,
        replicas=replicas,
    )
    stack = Stack(config)
    stack.start()
    running = RunningSystem(stack, rabbitmq, databases)
    try:
        stack.wait_ready(timeout=60)
        yield running
    finally:
        exit_codes = stack.stop()
        print(running.logs())
    assert all(code == 0 for code in exit_codes.values()), f"unclean shutdown: {exit_codes}"
