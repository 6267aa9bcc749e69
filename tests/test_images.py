"""Every service's image: one Dockerfile, told which service it is, installing that service
alone from the lock.

No Docker engine runs here, so these replay what a build does: the dependency stage's
copies and `uv sync` in a fresh folder, then the final `uv sync` into a fresh environment,
and the installed service's own command. An import the service does not declare fails here
as it would in its image.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from compose_spec import PyCompose
from yarl import URL

from servicekit.registry import SERVICE_NAMES, SERVICES, ServiceEntry

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SYNC = "RUN uv sync"


def build_steps(entry: ServiceEntry) -> list[tuple[str, list[str]]]:
    """The Dockerfile's COPY and `uv sync` steps in order, for this service:
    ("COPY", [source, ..., destination]) or ("RUN", ["uv", "sync", ...])."""
    steps = []
    for line in DOCKERFILE.read_text().splitlines():
        words = [word.strip('"') for word in line.replace("$SERVICE", entry.name).split()]
        if line.startswith("COPY "):
            steps.append(("COPY", words[1:]))
        elif line.startswith(SYNC):
            steps.append(("RUN", words[1:]))
    return steps


def copy(sources: list[str], destination: str, into: Path) -> None:
    """COPY as Docker does it: a file into the destination folder, a folder's contents onto
    the destination."""
    for source in sources:
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, into / destination, dirs_exist_ok=True)
        else:
            (into / destination).mkdir(parents=True, exist_ok=True)
            shutil.copy(origin, into / destination / origin.name)


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("entry", SERVICES, ids=lambda entry: entry.name)
def test_a_service_installs_alone_from_the_lock_and_starts(
    entry: ServiceEntry, tmp_path: Path
) -> None:
    """The build replayed step by step in a fresh folder: the dependency stage sees only the
    pyproject files and the lock, the final stage only the code the service runs."""
    image, venv = tmp_path / "app", tmp_path / "venv"
    syncs = []
    for kind, words in build_steps(entry):
        if kind == "COPY":
            *sources, destination = words
            copy(sources, destination, image)
        else:
            syncs.append(words)
            run(words, image, {"UV_PROJECT_ENVIRONMENT": str(venv)})
    dependencies_stage, final_stage = syncs
    assert "--no-install-workspace" in dependencies_stage
    assert {"--locked", "--no-dev"} <= set(final_stage)

    others = [other.package for other in SERVICES if other != entry]
    run(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"import importlib.util, sys; from {entry.package}.main import create_app; "
            "create_app(); "
            f"found = [p for p in {others!r} if importlib.util.find_spec(p)]; "
            "sys.exit(f'other services installed too: {found}' if found else 0)",
        ],
        tmp_path,
    )
    assert f"usage: {entry.name}" in run([str(venv / "bin" / entry.name), "--help"], tmp_path)


COMPOSE_FILE = ROOT / "docker-compose.yml"
TOKEN_KEYS = {
    "OPERATOR_TOKEN_PUBLIC_KEY_FILE": "./operator.pub",
    "ORDERS_ORDER_TOKEN_SECRET": "a-stand-in-of-at-least-32-bytes-for-the-check",
}
"""What compose needs from the environment, having no default: the token keys."""


def compose_with_token_keys() -> dict:
    """The compose file with `TOKEN_KEYS` filled in where it requires them (`${VAR:?...}`),
    as compose interpolates before it validates: a bind mount's source must be a path."""
    text = re.sub(
        r"\$\{(\w+):\?[^}]*\}",
        lambda found: TOKEN_KEYS.get(found[1], found[0]),
        COMPOSE_FILE.read_text(),
    )
    return yaml.safe_load(text)


def test_compose_file_follows_the_compose_specification() -> None:
    """What `docker compose config` checks, without Docker: YAML merges resolved, then the
    file validated against the Compose Specification (a misspelled key fails)."""
    spec = PyCompose.from_json(json.dumps(compose_with_token_keys())).to_spec()
    assert set(spec.services) >= {entry.name for entry in SERVICES}


def test_the_compose_check_refuses_a_misspelled_key() -> None:
    compose = compose_with_token_keys()
    compose["services"]["orders"]["build"]["dockerfle"] = "deploy/Dockerfile"
    with pytest.raises(ValueError, match="dockerfle"):
        PyCompose.from_json(json.dumps(compose))


def docker_compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` (Debian's 1.29.2) checks the file offline, interpolation and
    merges included, with only `env` (and PATH) set. It predates the top-level `name`, which
    the specification check above covers: it reads a copy without it, beside the original
    so relative paths still hold."""
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose is not installed: apt-get install -y docker-compose"
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    del compose["name"]
    copy = ROOT / f".compose-check-{os.getpid()}.yml"
    try:
        copy.write_text(yaml.safe_dump(compose))
        return subprocess.run(
            [docker_compose, "--project-name", "orderflow", "-f", str(copy), "config", "-q"],
            cwd=ROOT,
            env={"PATH": os.environ["PATH"], **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        copy.unlink()


def test_docker_compose_validates_the_compose_file() -> None:
    checked = docker_compose_config(TOKEN_KEYS)  # the dev-password defaults, not this shell's
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("variable", TOKEN_KEYS)
def test_compose_refuses_to_start_without_a_token_key(variable: str) -> None:
    """No default key or secret: production mode without them would be open, or forgeable."""
    checked = docker_compose_config({k: v for k, v in TOKEN_KEYS.items() if k != variable})
    assert checked.returncode != 0
    assert "Missing mandatory value" in checked.stderr and "see README" in checked.stderr


def test_compose_builds_every_service_from_the_one_dockerfile() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for entry in SERVICES:
        service = compose["services"][entry.name]
        assert service["build"]["context"] == "."
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["build"]["args"] == {"SERVICE": entry.name}
    assert not list(ROOT.glob("services/*/Dockerfile")), "one Dockerfile serves every service"


def test_compose_runs_each_service_in_production_as_its_own_accounts() -> None:
    """Each service connects as its own PostgreSQL role to its own database and as its own
    RabbitMQ user to the system's virtual host, in production mode: no guest, no superuser."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for entry in SERVICES:
        environment = compose["services"][entry.name]["environment"]
        assert environment[f"{entry.env_prefix}ENVIRONMENT"] == "production"
        database = URL(environment[f"{entry.env_prefix}DATABASE_URL"])
        assert (database.user, database.host, database.path) == (
            entry.name,
            "postgres",
            f"/{entry.name}",
        )
        broker = URL(environment[f"{entry.env_prefix}RABBITMQ_URL"])
        assert (broker.user, broker.host, broker.path) == (entry.name, "rabbitmq", "/orderflow")
        depends_on = compose["services"][entry.name]["depends_on"]
        assert depends_on["postgres"] == depends_on["rabbitmq"] == {"condition": "service_healthy"}


def test_compose_gives_every_service_the_operator_public_key_and_orders_its_secret() -> None:
    """The public key is mounted into every service, read-only (the private key never is);
    the order-token secret reaches orders alone, from the environment."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for entry in SERVICES:
        service = compose["services"][entry.name]
        path = service["environment"][f"{entry.env_prefix}OPERATOR_TOKEN_PUBLIC_KEY"]
        mounts = {volume["target"]: volume for volume in service["volumes"]}
        assert mounts[path]["source"].startswith("${OPERATOR_TOKEN_PUBLIC_KEY_FILE:?"), entry.name
        assert mounts[path]["read_only"] is True, entry.name
        secret = service["environment"].get("ORDERS_ORDER_TOKEN_SECRET")
        if entry.name == "orders":
            assert secret.startswith("${ORDERS_ORDER_TOKEN_SECRET:?"), secret
        else:
            assert secret is None, entry.name


def test_compose_publishes_only_the_orders_api_beyond_this_machine() -> None:
    """The orders API on every interface; the other services' APIs and the operator's UIs
    on 127.0.0.1 alone (an operator stocks inventory from this machine); the broker and the
    databases only inside compose's network."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    published = {
        (name, port)
        for name, service in compose["services"].items()
        for port in service.get("ports", [])
    }
    everywhere = {(name, port) for name, port in published if not port.startswith("127.0.0.1:")}
    assert everywhere == {("orders", "8001:8001")}
    assert {name for name, _ in published} == {
        *SERVICE_NAMES, "rabbitmq", "mailpit", "jaeger", "prometheus", "grafana",
    }  # fmt: skip


OBSERVABILITY = ROOT / "deploy" / "observability"


def test_compose_traces_every_service_into_jaeger_and_prometheus_scrapes_each() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"jaeger", "prometheus", "grafana"} <= set(compose["services"])
    for entry in SERVICES:
        environment = compose["services"][entry.name]["environment"]
        assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318", entry.name
    for volume in (
        *compose["services"]["prometheus"]["volumes"],
        *compose["services"]["grafana"]["volumes"],
    ):
        assert (ROOT / volume.split(":")[0]).exists(), volume
    scraped = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    targets = {
        target
        for job in scraped["scrape_configs"]
        for config in job["static_configs"]
        for target in config["targets"]
    }
    assert targets == {f"{e.name}:{e.default_port}" for e in SERVICES} | {"rabbitmq:15692"}


def test_the_dashboard_charts_only_metrics_the_services_expose() -> None:
    """Every metric a panel queries is one a service's /metrics serves (FastStream's
    families by their prefix)."""
    source = (ROOT / "libs/servicekit/src/servicekit/metrics.py").read_text()
    dashboard = json.loads((OBSERVABILITY / "grafana/dashboards/orderflow.json").read_text())
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert len(titles) == 6, titles
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r"by \([^)]*\)", "", target["expr"])  # grouping labels
            for name in re.findall(r"\b([a-z_]+)(?=[{\[)])", expr):
                family = re.sub(r"_(total|bucket|count|sum)$", "", name)
                assert name.startswith("faststream_") or f'"{family}"' in source, (
                    panel["title"],
                    name,
                )
