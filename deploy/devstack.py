"""Run the whole system on this machine: an SMTP sink, the four services as separate processes
and the operator console (`orderctl console`).

`make run` runs this file; the end-to-end tests start the system through the same `Stack`.
It expects RabbitMQ and PostgreSQL at RABBITMQ_URL and POSTGRES_URL (defaults: the local
servers); each service creates its database if missing and applies its migrations as it
starts. `REPLICAS=N` starts N processes of every service, replica n of a service on its port
+ 10·(n−1). Ctrl-C stops everything.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from orderctl.audit import url_variable
from servicekit import registry
from servicekit.registry import SERVICES

ROOT = Path(__file__).resolve().parents[1]

CONSOLE = "console"
"""The operator console's process name."""
REPLICA_PORT_STEP = 10
"""Replica n of a service listens on its documented port + 10·(n−1): orders 8001, 8011, …"""


def instance_name(service: str, replica: int) -> str:
    """A process's name: the service's own for replica 1 (`orders`), then `orders-2`, …"""
    return service if replica == 1 else f"{service}-{replica}"


def service_of(instance: str) -> str:
    """The service an instance name (`orders`, `orders-2`) runs."""
    service, _, replica = instance.rpartition("-")
    return service if replica.isdigit() and service else instance


def instance_names(replicas: int, service: str | None = None) -> list[str]:
    """Every service process's name (or one service's), replica 1 first."""
    names = [s.name for s in SERVICES] if service is None else [service]
    return [instance_name(name, n) for name in names for n in range(1, replicas + 1)]


@dataclass
class StackConfig:
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432"
    database_prefix: str = ""
    replicas: int = 1
    """Processes of every service: competing consumers on its queues, sharing its database."""
    ports: dict[str, int] = field(default_factory=dict)
    """Each process's HTTP port, by instance name; by default the documented ports, stepped
    by `REPLICA_PORT_STEP` for each further replica."""
    smtp_port: int = 1025
    console_port: int = 8000
    run_dir: Path = ROOT / ".run"
    log_to_files: bool = False
    """False: every process writes to this terminal; True: to `<run_dir>/<name>.log`."""
    service_env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every service, e.g. `{"ORDERS_PREFETCH": "4"}`."""
    services_tree: Path = ROOT
    """The checkout whose code the services run: this one with this interpreter, or another
    (an older revision, say) as `<tree>/.venv/bin/python -m <package> serve` from there."""

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {self.replicas}")
        if not self.ports:
            self.ports = {
                instance_name(s.name, n): s.default_port + REPLICA_PORT_STEP * (n - 1)
                for s in SERVICES
                for n in range(1, self.replicas + 1)
            }

    def instances(self, service: str | None = None) -> list[str]:
        return instance_names(self.replicas, service)

    @classmethod
    def from_environment(cls) -> "StackConfig":
        config = cls(replicas=int(os.environ.get("REPLICAS", "1")))
        config.rabbitmq_url = os.environ.get("RABBITMQ_URL", config.rabbitmq_url)
        config.postgres_url = os.environ.get("POSTGRES_URL", config.postgres_url)
        config.smtp_port = int(os.environ.get("SMTP_PORT", config.smtp_port))
        return config

    @classmethod
    def beside_others(
        cls,
        *,
        rabbitmq_url: str,
        postgres_url: str,
        database_prefix: str,
        run_dir: Path,
        service_env: dict[str, str] | None = None,
        replicas: int = 1,
    ) -> "StackConfig":
        """A stack that runs beside any other on this machine, as tests start it: free ports,
        databases named `<database_prefix><service>`, each process logging to `run_dir`."""
        instances = instance_names(replicas)
        *service_ports, smtp_port, console_port = free_ports(len(instances) + 2)
        return cls(
            rabbitmq_url=rabbitmq_url,
            postgres_url=postgres_url,
            database_prefix=database_prefix,
            replicas=replicas,
            ports=dict(zip(instances, service_ports, strict=True)),
            smtp_port=smtp_port,
            console_port=console_port,
            run_dir=run_dir,
            log_to_files=True,
            service_env=dict(service_env or {}),
        )

    @property
    def mbox(self) -> Path:
        return self.run_dir / "mail.mbox"

    @property
    def service_python(self) -> str:
        if self.services_tree.resolve() == ROOT:
            return sys.executable
        return str(self.services_tree / ".venv" / "bin" / "python")


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.processes: dict[str, subprocess.Popen] = {}

    def url(self, instance: str) -> str:
        """The HTTP API of a service's process: `orders` (replica 1), `orders-2`, …; or the
        console's (`console`)."""
        if instance == CONSOLE:
            return f"http://127.0.0.1:{self.config.console_port}"
        return f"http://127.0.0.1:{self.config.ports[instance]}"

    def environment(self, instance: str) -> dict[str, str]:
        config = self.config
        entry = registry.service(service_of(instance))
        prefix = entry.env_prefix
        database = f"{config.database_prefix}{entry.name}"
        return {
            **os.environ,
            f"{prefix}RABBITMQ_URL": config.rabbitmq_url,
            f"{prefix}DATABASE_URL": f"{config.postgres_url}/{database}",
            f"{prefix}HTTP_PORT": str(config.ports[instance]),
            "EMAIL_SMTP_PORT": str(config.smtp_port),
            **config.service_env,
        }

    def start(self) -> None:
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        self.start_smtp_sink()
        for instance in self.config.instances():
            self.start_service(instance)

    def start_smtp_sink(self) -> None:
        self._spawn(
            "smtp-sink",
            [
                sys.executable,
                str(ROOT / "deploy" / "smtp_sink.py"),
                "--port",
                str(self.config.smtp_port),
                "--mbox",
                str(self.config.mbox),
            ],
            dict(os.environ),
        )

    def start_service(
        self, instance: str, launcher: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        """Start one service process (`orders`, `orders-2`): `python -m <module> serve`, or
        `python <launcher> <module> serve` when a test runs it through a wrapper script, with
        `env` on top of its own."""
        entry = registry.service(service_of(instance))
        how = [launcher] if launcher else ["-m"]
        self._spawn(
            instance,
            [self.config.service_python, *how, entry.package, "serve"],
            {**self.environment(instance), **(env or {})},
            cwd=self.config.services_tree,
        )

    def _spawn(self, name: str, command: list[str], env: dict[str, str], cwd: Path = ROOT) -> None:
        output = None
        if self.config.log_to_files:
            output = open(self.config.run_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        # A session of its own: Ctrl-C reaches only this launcher, which stops children in order.
        self.processes[name] = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
        )

    def start_console(self, env: dict[str, str] | None = None) -> None:
        """Start `orderctl console` on this stack: replica 1 of each service, its broker (the
        operator's account), with `env` on top of this process's own."""
        urls = {url_variable(entry): self.url(entry.name) for entry in SERVICES}
        self._spawn(
            CONSOLE,
            [sys.executable, "-m", "orderctl", "console", "--port", str(self.config.console_port)],
            {**os.environ, "RABBITMQ_URL": self.config.rabbitmq_url, **urls, **(env or {})},
        )

    def wait_ready(self, timeout: float = 60.0, services: tuple[str, ...] | None = None) -> None:
        """Poll each service process's /health/ready (all of them, or the instances named)
        until all answer 200; raise on timeout or crash."""
        pending = set(services or self.config.instances())
        deadline = time.monotonic() + timeout
        while pending:
            for name in sorted(pending):
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited with code {self.processes[name].returncode}")
                if _is_ready(self.url(name)):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout}s: {', '.join(sorted(pending))}")
            if pending:
                time.sleep(0.2)

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal one process and wait for it to exit. Its exit code."""
        if self.processes[name].poll() is None:
            self.processes[name].send_signal(sig)
        return self._wait(name, timeout)

    def stop(self, timeout: float = 30.0) -> dict[str, int]:
        """Stop the services together (they finish in-flight work), then the SMTP sink."""
        services = [name for name in self.processes if name != "smtp-sink"]
        for name in services:
            if self.processes[name].poll() is None:
                self.processes[name].send_signal(signal.SIGTERM)
        codes = {name: self._wait(name, timeout) for name in services}
        if "smtp-sink" in self.processes:
            codes["smtp-sink"] = self.stop_service("smtp-sink")
        return codes

    def _wait(self, name: str, timeout: float) -> int:
        """Wait for a process to exit; kill it if it outlives `timeout`."""
        process = self.processes[name]
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return process.returncode

    def exited(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that nothing listens on right now.

    All are held open until all are chosen: a port released at once may be handed out
    again by the next bind, and two processes of one stack would then share it."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _is_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    stack = Stack(StackConfig.from_environment())
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    stack.start()
    stack.start_console()
    try:
        stack.wait_ready(timeout=90, services=(*stack.config.instances(), CONSOLE))
    except (RuntimeError, TimeoutError) as exc:
        print(f"\nstart-up failed: {exc}", file=sys.stderr)
        stack.stop()
        return 1
    print("\nAll services ready:")
    for instance in stack.config.instances():
        print(f"  {instance:<12} {(url := stack.url(instance))}   (API docs: {url}/docs)")
    print(f"  smtp-sink    127.0.0.1:{stack.config.smtp_port}   (mail kept in {stack.config.mbox})")
    print(f"  {CONSOLE:<12} {stack.url(CONSOLE)}   (the operator console)")
    print("Place an order: see README.md. Ctrl-C stops everything.\n", flush=True)
    while not stopping:
        if crashed := stack.exited():
            print(f"\nstopped unexpectedly: {crashed}; stopping the rest", file=sys.stderr)
            stack.stop()
            return 1
        time.sleep(0.5)
    print("\nstopping...", flush=True)
    codes = stack.stop()
    print(f"stopped: {codes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
