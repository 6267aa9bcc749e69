"""The Kubernetes manifests (deploy/k8s), rendered with `kubectl kustomize` exactly as they are
applied, validated against the Kubernetes schemas, and held to what the deployment promises:
probes on the right paths, least privilege, graceful shutdown, no credential in a manifest,
only orders reachable from outside, one apply target per service, each service's own broker
permissions (servicekit.topology.broker_permissions), and dev provisioned exactly as
`orderctl provision` renders it. No cluster is needed.

Each check is a function returning the problems it finds, so one rendered overlay is checked
by all of them at once, and `test_each_check_catches_its_breakage` shows each one failing on
a deliberately broken copy.
"""

import base64
import copy
import functools
import importlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from orderctl import provision
from servicekit.registry import SERVICES, ServiceEntry
from servicekit.settings import ServiceSettings
from servicekit.topology import (
    DEFAULT_EXCHANGE,
    EVENTS_EXCHANGE,
    backoff_exchange_name,
    broker_permissions,
    dead_letter_exchange_name,
    dead_letter_queue_name,
    redeliver_exchange_name,
    retry_queue_name,
    wait_queue_name,
    work_queue_name,
)

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
DEV = "overlays/dev"
PROD = "overlays/prod"
KUBERNETES_VERSION = "1.32.0"  # kubectl's; >= 1.30 knows lifecycle.preStop.sleep

PUBLIC_SERVICE = "orders"
"""The one service reachable from outside the namespace (its Ingress, in prod)."""
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}
"""The namespace Prometheus scrapes from: allowed in to every service."""
IMAGE = "ghcr.io/orderflow/{}"
CRD_GROUPS = ("rabbitmq.com/", "postgresql.cnpg.io/")
"""Operators' kinds: not in the Kubernetes schemas, checked field by field below."""
CREDENTIAL = re.compile(r"(DATABASE_URL|RABBITMQ_URL|PASSWORD|SECRET|TOKEN)$")

DEV_INITDB = "/docker-entrypoint-initdb.d"
"""Where the dev postgres image finds its first-start scripts."""
DEV_POSTGRES_SCRIPT = "postgres-provision.sql"
DEV_DEFINITIONS = "rabbitmq-definitions.json"

Obj = dict[str, Any]


# --- rendering --------------------------------------------------------------------------


@functools.cache
def _kustomize(directory: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is not on PATH: it renders deploy/k8s (`kubectl kustomize`, kustomize "
            ">= 5); install kubectl >= 1.30 to run these tests"
        )
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / directory)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return done.stdout


def rendered(directory: str) -> list[Obj]:
    """What `kubectl apply -k deploy/k8s/<directory>` would send: a fresh copy every call."""
    return [doc for doc in yaml.safe_load_all(_kustomize(directory)) if doc]


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in of_kind(objects, kind) if o["metadata"]["name"] == name), None)


def label(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def pod_labels(workload: Obj) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def containers(pod: Obj) -> Iterator[Obj]:
    yield from pod.get("initContainers", [])
    yield from pod["containers"]


def app_container(deployment: Obj) -> Obj:
    return next(
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "app"
    )


def without_hash(name: str) -> str:
    """A generated ConfigMap's or Secret's name without kustomize's content hash."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def image_user() -> int:
    """The numeric user deploy/Dockerfile runs the image as."""
    users = re.findall(r"^USER\s+(\d+)", (ROOT / "deploy" / "Dockerfile").read_text(), re.M)
    assert users, "deploy/Dockerfile must name its USER by number (runAsNonRoot checks it)"
    return int(users[-1])


# --- checks: each returns the problems it finds -------------------------------------------


def schema_problems(objects: list[Obj]) -> list[str]:
    """Every built-in object is valid for KUBERNETES_VERSION, no unknown field allowed."""
    problems = []
    for obj in objects:
        if not obj["apiVersion"].startswith(CRD_GROUPS):
            error = _schema_error(json.dumps(obj, sort_keys=True))
            problems += [f"{label(obj)}: schema: {error}"] if error else []
    return problems


@functools.cache
def _schema_error(text: str) -> str | None:
    """Validated once per distinct object: the many broken copies below share most of theirs."""
    obj = json.loads(text)
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{error.message} at {list(error.path)}"
    except kubernetes_validate.SchemaNotFoundError:
        return f"no {obj['apiVersion']} {obj['kind']} in Kubernetes {KUBERNETES_VERSION}"
    return None


def workload_problems(objects: list[Obj]) -> list[str]:
    """Every pod anywhere: non-root, RuntimeDefault seccomp, no privilege escalation, every
    capability dropped, requests and limits on every container, init containers included."""
    problems = []
    for workload in of_kind(objects, "Deployment") + of_kind(objects, "StatefulSet"):
        pod = workload["spec"]["template"]["spec"]
        where = label(workload)
        if pod.get("hostNetwork") or pod.get("hostPID"):
            problems.append(f"{where}: uses the host's network or processes")
        pod_security = pod.get("securityContext", {})
        for container in containers(pod):
            at = f"{where} container {container['name']}"
            security = {**pod_security, **container.get("securityContext", {})}
            if security.get("runAsNonRoot") is not True or security.get("runAsUser") in (0, None):
                problems.append(f"{at}: must run as a numeric non-root user (runAsNonRoot)")
            if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{at}: seccompProfile must be RuntimeDefault")
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{at}: allowPrivilegeEscalation must be false")
            if security.get("privileged"):
                problems.append(f"{at}: privileged")
            capabilities = security.get("capabilities", {})
            if "ALL" not in capabilities.get("drop", []) or capabilities.get("add"):
                problems.append(f"{at}: capabilities must drop ALL and add none")
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                missing = {"cpu", "memory"} - resources.get(kind, {}).keys()
                if missing:
                    problems.append(f"{at}: no {kind} for {', '.join(sorted(missing))}")
            if any("hostPort" in port for port in container.get("ports", [])):
                problems.append(f"{at}: hostPort")
    return problems


def exposure_problems(objects: list[Obj]) -> list[str]:
    """Only the public service is reachable from outside the cluster: every Service is
    ClusterIP, and only its Ingress exists."""
    problems = [
        f"{label(s)}: type {s['spec']['type']}: only an Ingress exposes, and only {PUBLIC_SERVICE}"
        for s in of_kind(objects, "Service")
        if s["spec"].get("type", "ClusterIP") != "ClusterIP"
    ]
    for ingress in of_kind(objects, "Ingress"):
        backends = {
            path["backend"]["service"]["name"]
            for rule in ingress["spec"].get("rules", [])
            for path in rule.get("http", {}).get("paths", [])
        }
        if default := ingress["spec"].get("defaultBackend"):
            backends.add(default["service"]["name"])
        if backends - {PUBLIC_SERVICE}:
            problems.append(f"{label(ingress)}: exposes {sorted(backends - {PUBLIC_SERVICE})}")
    return problems


def credential_leak_problems(objects: list[Obj]) -> list[str]:
    """No credential written into a manifest's env or ConfigMap: they come from Secrets."""
    problems = []
    for config_map in of_kind(objects, "ConfigMap"):
        problems += [
            f"{label(config_map)}: {key} is a credential: read it from a Secret"
            for key in config_map.get("data", {})
            if CREDENTIAL.search(key)
        ]
    for workload in of_kind(objects, "Deployment") + of_kind(objects, "StatefulSet"):
        for container in containers(workload["spec"]["template"]["spec"]):
            problems += [
                f"{label(workload)} container {container['name']}: {env['name']} is inline; "
                "it must come from a secretKeyRef"
                for env in container.get("env", [])
                if CREDENTIAL.search(env["name"]) and "secretKeyRef" not in env.get("valueFrom", {})
            ]
    return problems


def inline_secret_problems(objects: list[Obj]) -> list[str]:
    """Base and prod carry no Secret with data: the cluster's own are referenced by name."""
    return [
        f"{label(s)}: a Secret with inline data; create it in the cluster, reference it by name"
        for s in of_kind(objects, "Secret")
        if s.get("data") or s.get("stringData")
    ]


def registry_problems(objects: list[Obj]) -> list[str]:
    """The system's Deployments are the registry's services, no more."""
    known = {entry.name for entry in SERVICES}
    return [
        f"{label(d)}: not a service in servicekit.registry"
        for d in of_kind(objects, "Deployment")
        if pod_labels(d).get("app.kubernetes.io/part-of") == "orderflow"
        and d["metadata"]["name"] not in known
    ]


def settings_class(entry: ServiceEntry) -> type[ServiceSettings]:
    config = importlib.import_module(f"{entry.package}.config")
    return next(
        value
        for value in vars(config).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value.model_config.get("env_prefix") == entry.env_prefix
    )


def settings_of(objects: list[Obj], deployment: Obj) -> dict[str, str]:
    """The app container's environment from its ConfigMaps (missing ones are reported)."""
    data: dict[str, str] = {}
    for source in app_container(deployment).get("envFrom", []):
        if "configMapRef" in source:
            config_map = named(objects, "ConfigMap", source["configMapRef"]["name"])
            data.update(config_map.get("data", {}) if config_map else {})
    return data


def parsed_settings(
    entry: ServiceEntry, settings: dict[str, str]
) -> tuple[ServiceSettings | None, list[str]]:
    """The service's own settings class reading the ConfigMap (credentials stand-ins added),
    and the ConfigMap keys it does not know (a typo would be ignored silently)."""
    return _parsed_settings(entry, tuple(sorted(settings.items())))


@functools.cache
def _parsed_settings(
    entry: ServiceEntry, items: tuple[tuple[str, str], ...]
) -> tuple[ServiceSettings | None, list[str]]:
    settings = dict(items)
    cls = settings_class(entry)
    prefix = entry.env_prefix
    unknown = [
        f"{entry.name}: ConfigMap key {key} is no setting of {cls.__name__}"
        for key in settings
        if not key.startswith("OTEL_")
        and not (key.startswith(prefix) and key[len(prefix) :].lower() in cls.model_fields)
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
    env |= settings | {
        f"{prefix}DATABASE_URL": "postgresql://user:stand-in@db/db",
        f"{prefix}RABBITMQ_URL": "amqp://user:stand-in@rabbitmq/orderflow",
        f"{prefix}OPERATOR_TOKEN_PUBLIC_KEY": stand_in_public_key(),
    }
    if "order_token_secret" in cls.model_fields:
        env[f"{prefix}ORDER_TOKEN_SECRET"] = "a-stand-in-of-at-least-32-bytes-for-the-check"
    with mock.patch.dict(os.environ, env, clear=True):
        try:
            return cls(), unknown
        except ValueError as error:  # pydantic's ValidationError
            return None, [*unknown, f"{entry.name}: its settings are refused: {error}"]


@functools.cache
def stand_in_public_key() -> str:
    """An Ed25519 public key in PEM, standing in for ConfigMap operator-token-public-key."""
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def settings_problems(
    entry: ServiceEntry, deployment: Obj, settings: dict[str, str], production: bool
) -> list[str]:
    values, problems = parsed_settings(entry, settings)
    if values is None:
        return problems
    ports = [p["containerPort"] for p in app_container(deployment).get("ports", [])]
    expected = {
        "http_host": "0.0.0.0",
        "http_port": entry.default_port,
        "log_format": "json",
        "environment": "production" if production else "development",
    }
    problems += [
        f"{entry.name}: {entry.env_prefix}{field.upper()} is {getattr(values, field)!r}, "
        f"not {want!r}"
        for field, want in expected.items()
        if getattr(values, field) != want
    ]
    if ports != [values.http_port]:
        problems.append(f"{entry.name}: containerPort {ports} is not HTTP_PORT {values.http_port}")
    # Said explicitly, since the grace period below is computed from it.
    explicit = ["GRACEFUL_TIMEOUT"]
    if "smtp_host" in type(values).model_fields:
        explicit += ["SMTP_HOST", "SMTP_PORT"]
    problems += [
        f"{entry.name}: {entry.env_prefix}{key} must be set in its ConfigMap"
        for key in explicit
        if entry.env_prefix + key not in settings
    ]
    return problems


def image_problems(entry: ServiceEntry, deployment: Obj) -> list[str]:
    pod = deployment["spec"]["template"]["spec"]
    problems = []
    migrate = [
        c for c in pod.get("initContainers", []) if c.get("command") == [entry.name, "migrate"]
    ]
    if not migrate:
        problems.append(f"{entry.name}: no init container running `{entry.name} migrate`")
    if app_container(deployment).get("command") != [entry.name, "serve"]:
        problems.append(f"{entry.name}: the app container must run `{entry.name} serve`")
    for container in containers(pod):
        repository, _, tag = container["image"].partition(":")
        if repository != IMAGE.format(entry.name) or tag in ("", "latest"):
            problems.append(
                f"{entry.name} container {container['name']}: image {container['image']} is not "
                f"{IMAGE.format(entry.name)}:<tag>"
            )
    return problems


def probe_problems(entry: ServiceEntry, deployment: Obj) -> list[str]:
    """Readiness on /health/ready; liveness and startup on /health/live, which a broker
    outage does not fail (so it makes the pod unready, never restarts it)."""
    app = app_container(deployment)
    port_names = {p.get("name") for p in app.get("ports", [])} | {
        p["containerPort"] for p in app.get("ports", [])
    }
    problems = []
    for probe, path in [
        ("startupProbe", "/health/live"),
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
    ]:
        http = app.get(probe, {}).get("httpGet", {})
        if http.get("path") != path:
            problems.append(f"{entry.name}: {probe} must GET {path}, not {http.get('path')}")
        elif http.get("port") not in port_names:
            problems.append(f"{entry.name}: {probe} port {http.get('port')} is not the app's")
    return problems


def hardening_problems(entry: ServiceEntry, deployment: Obj) -> list[str]:
    """Beyond every pod's rules: the image's own user, a read-only root, a writable /tmp."""
    pod = deployment["spec"]["template"]["spec"]
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    problems = []
    for container in containers(pod):
        at = f"{entry.name} container {container['name']}"
        security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        if security.get("runAsUser") != image_user():
            problems.append(f"{at}: runAsUser must be the image's user {image_user()}")
        if security.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{at}: readOnlyRootFilesystem must be true")
        if not any(
            m["mountPath"] == "/tmp" and m["name"] in empty_dirs
            for m in container.get("volumeMounts", [])
        ):
            problems.append(f"{at}: needs an emptyDir at /tmp (the root is read-only)")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{entry.name}: mounts a service account token it never uses")
    return problems


def pre_stop_seconds(container: Obj) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    return float(command[1]) if command[:1] == ["sleep"] else 0.0


def shutdown_problems(entry: ServiceEntry, deployment: Obj, settings: dict[str, str]) -> list[str]:
    """The grace period outlasts the preStop pause plus the handlers' graceful timeout."""
    values, _ = parsed_settings(entry, settings)
    if values is None:
        return []  # reported by settings_problems
    pause = pre_stop_seconds(app_container(deployment))
    grace = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    problems = []
    if pause <= 0:
        problems.append(f"{entry.name}: no preStop pause before SIGTERM")
    if grace <= pause + values.graceful_timeout:
        problems.append(
            f"{entry.name}: terminationGracePeriodSeconds {grace} must exceed preStop {pause} s "
            f"+ {entry.env_prefix}GRACEFUL_TIMEOUT {values.graceful_timeout} s"
        )
    return problems


OPERATOR_KEY_REF = ("ConfigMap", "operator-token-public-key", "public-key.pem")
"""Where every service reads the operator token public key from: one ConfigMap for all."""
ORDER_TOKEN_SECRET_REF = ("Secret", "orders-order-token", "secret")
REFERENCE = {"Secret": "secretKeyRef", "ConfigMap": "configMapKeyRef"}


def expected_references(entry: ServiceEntry) -> dict[str, tuple[str, str, str]]:
    """Each variable every container of the service reads from a Secret or ConfigMap (as
    the README names them): variable -> (kind, name, key)."""
    prefix = entry.env_prefix
    expected = {
        f"{prefix}DATABASE_URL": ("Secret", f"{entry.name}-db-app", "uri"),
        f"{prefix}RABBITMQ_URL": ("Secret", f"{entry.name}-rabbitmq", "url"),
        f"{prefix}OPERATOR_TOKEN_PUBLIC_KEY": OPERATOR_KEY_REF,
    }
    if "order_token_secret" in settings_class(entry).model_fields:
        expected[f"{prefix}ORDER_TOKEN_SECRET"] = ORDER_TOKEN_SECRET_REF
    return expected


def credential_reference_problems(
    objects: list[Obj], entry: ServiceEntry, deployment: Obj
) -> list[str]:
    """The URLs, the operator token public key and (orders) the order-token secret in every
    container, from the Secrets and the ConfigMap named in the README."""
    problems = []
    for container in containers(deployment["spec"]["template"]["spec"]):
        env = {e["name"]: e for e in container.get("env", [])}
        for variable, (kind, name, key) in expected_references(entry).items():
            ref = env.get(variable, {}).get("valueFrom", {}).get(REFERENCE[kind], {})
            if (without_hash(ref.get("name", "")), ref.get("key")) != (name, key):
                problems.append(
                    f"{entry.name} container {container['name']}: {variable} must come from "
                    f"{kind} {name} key {key}"
                )
            elif (generated := named(objects, kind, ref["name"])) and key not in {
                **generated.get("data", {}),
                **generated.get("stringData", {}),
            }:
                problems.append(f"{entry.name}: {kind} {ref['name']} has no key {key}")
    return problems


def pdb_problems(objects: list[Obj], entry: ServiceEntry, deployment: Obj) -> list[str]:
    """A PodDisruptionBudget selecting this service's pods, and no other's, that lets a drain
    take one replica at a time."""
    labels = pod_labels(deployment)
    others = [pod_labels(d) for d in of_kind(objects, "Deployment") if d is not deployment]
    budgets = [
        pdb
        for pdb in of_kind(objects, "PodDisruptionBudget")
        if selects(pdb["spec"]["selector"].get("matchLabels", {}), labels)
    ]
    if not budgets:
        return [f"{entry.name}: no PodDisruptionBudget selects its pods"]
    problems = []
    for pdb in budgets:
        if any(selects(pdb["spec"]["selector"]["matchLabels"], other) for other in others):
            problems.append(f"{label(pdb)}: selects another service's pods too")
        replicas = deployment["spec"].get("replicas", 1)
        if (
            pdb["spec"].get("maxUnavailable", 1) == 0
            or pdb["spec"].get("minAvailable", 0) >= replicas
        ):
            problems.append(f"{label(pdb)}: allows no disruption: a node drain would hang")
    return problems


def selector_problems(objects: list[Obj], entry: ServiceEntry, deployment: Obj) -> list[str]:
    labels = pod_labels(deployment)
    problems = []
    if not selects(deployment["spec"]["selector"]["matchLabels"], labels):
        problems.append(f"{entry.name}: its Deployment's selector does not match its pod labels")
    service = named(objects, "Service", entry.name)
    if service is None:
        return [*problems, f"{entry.name}: no Service"]
    if not selects(service["spec"].get("selector", {}), labels):
        problems.append(f"{entry.name}: its Service's selector does not match its pods")
    for other in of_kind(objects, "Deployment"):
        if other is not deployment and selects(
            service["spec"].get("selector", {}), pod_labels(other)
        ):
            problems.append(f"{entry.name}: its Service selects {label(other)}'s pods too")
    return problems


def peer_is_outside(peer: Obj) -> bool:
    """A NetworkPolicy peer admitting traffic from outside the namespace, Prometheus aside."""
    if "ipBlock" in peer:
        return True
    return (
        "namespaceSelector" in peer and peer["namespaceSelector"].get("matchLabels") != MONITORING
    )


def network_problems(objects: list[Obj], entry: ServiceEntry, deployment: Obj) -> list[str]:
    """Some NetworkPolicy isolates the service's pods; only the public service admits traffic
    from other namespaces (Prometheus's aside)."""
    labels = pod_labels(deployment)
    policies = [
        p
        for p in of_kind(objects, "NetworkPolicy")
        if selects(p["spec"]["podSelector"].get("matchLabels", {}), labels)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not policies:
        return [f"{entry.name}: no NetworkPolicy isolates its pods"]
    if entry.name == PUBLIC_SERVICE:
        return []
    return [
        f"{label(policy)}: admits traffic from outside the namespace; only {PUBLIC_SERVICE} may"
        for policy in policies
        for rule in policy["spec"].get("ingress", [])
        if not rule.get("from") or any(peer_is_outside(peer) for peer in rule["from"])
    ]


def service_problems(objects: list[Obj], entry: ServiceEntry, production: bool) -> list[str]:
    deployment = named(objects, "Deployment", entry.name)
    if deployment is None:
        return [f"{entry.name}: no Deployment (every service in servicekit.registry has one)"]
    settings = settings_of(objects, deployment)
    return [
        *image_problems(entry, deployment),
        *probe_problems(entry, deployment),
        *hardening_problems(entry, deployment),
        *settings_problems(entry, deployment, settings, production),
        *shutdown_problems(entry, deployment, settings),
        *credential_reference_problems(objects, entry, deployment),
        *pdb_problems(objects, entry, deployment),
        *selector_problems(objects, entry, deployment),
        *network_problems(objects, entry, deployment),
    ]


def permission_problems(service: str, permissions: dict[str, str]) -> list[str]:
    """The broker permissions of a service: exactly servicekit's, and what they let it touch."""
    problems = []
    expected = broker_permissions(service)._asdict()
    if permissions != expected:
        problems.append(
            f"{service}: broker permissions {permissions} are not "
            f"servicekit.topology.broker_permissions({service!r}) {expected}"
        )
    own = [
        work_queue_name(service),
        retry_queue_name(service, 1),
        wait_queue_name(service, 1, 1.0),
        dead_letter_queue_name(service),
        dead_letter_exchange_name(service),
        backoff_exchange_name(service),
        redeliver_exchange_name(service),
    ]
    theirs = [
        name
        for entry in SERVICES
        if entry.name != service
        for name in (
            work_queue_name(entry.name),
            retry_queue_name(entry.name, 1),
            dead_letter_queue_name(entry.name),
        )
    ]
    can = {
        op: re.compile(permissions.get(op, "^$")).fullmatch for op in ("configure", "write", "read")
    }
    events = EVENTS_EXCHANGE.name
    if not all(can[op](name) for op in can for name in own):
        problems.append(f"{service}: cannot configure, write and read its own queues and exchange")
    if can["configure"](events) or any(can["configure"](name) for name in theirs):
        problems.append(f"{service}: may configure `events` or another service's queues")
    if not (can["write"](events) and can["read"](events)):
        problems.append(f"{service}: cannot publish to or bind from `events`")
    if not can["write"](DEFAULT_EXCHANGE):
        problems.append(
            f"{service}: cannot write {DEFAULT_EXCHANGE}: its retry chain dead-letters through "
            "the default exchange (and request-reply publishes through it)"
        )
    if any(can["read"](name) or can["write"](name) for name in theirs):
        problems.append(f"{service}: may read or write another service's queues")
    return problems


def broker_problems(objects: list[Obj]) -> list[str]:
    """Prod: a three-node RabbitmqCluster, the vhost and `events` declared by the topology
    operator, and each service's User and Permission."""
    problems = []
    cluster = named(objects, "RabbitmqCluster", "rabbitmq")
    if cluster is None or cluster["apiVersion"] != "rabbitmq.com/v1beta1":
        return ["no rabbitmq.com/v1beta1 RabbitmqCluster named rabbitmq"]
    if cluster["spec"].get("replicas") != 3:
        problems.append("RabbitmqCluster: 3 replicas, so quorum queues survive a node")
    if {"requests", "limits"} - cluster["spec"].get("resources", {}).keys():
        problems.append("RabbitmqCluster: resources needs requests and limits")
    vhost = named(objects, "Vhost", "orderflow")
    if vhost is None or vhost["spec"].get("name") != "orderflow":
        problems.append("no Vhost orderflow")
    events = named(objects, "Exchange", "events")
    if events is None or (
        events["spec"].get("name"),
        events["spec"].get("type"),
        events["spec"].get("vhost"),
        events["spec"].get("durable"),
    ) != ("events", "topic", "orderflow", True):
        problems.append("no durable topic Exchange events in vhost orderflow")
    topology = [o for o in objects if o["kind"] in ("Vhost", "Exchange", "User", "Permission")]
    problems += [
        f"{label(o)}: must be rabbitmq.com/v1beta1 and name RabbitmqCluster rabbitmq"
        for o in topology
        if o["apiVersion"] != "rabbitmq.com/v1beta1"
        or o["spec"].get("rabbitmqClusterReference", {}).get("name") != "rabbitmq"
    ]
    for entry in SERVICES:
        user = named(objects, "User", entry.name)
        if user is None or user["spec"].get("importCredentialsSecret", {}).get("name") != (
            f"{entry.name}-rabbitmq"
        ):
            problems.append(f"{entry.name}: no User importing Secret {entry.name}-rabbitmq")
        permission = named(objects, "Permission", entry.name)
        if permission is None:
            problems.append(f"{entry.name}: no Permission")
            continue
        if (permission["spec"].get("vhost"), permission["spec"].get("userReference")) != (
            "orderflow",
            {"name": entry.name},
        ):
            problems.append(f"{entry.name}: its Permission must be for its User in vhost orderflow")
        problems += permission_problems(entry.name, permission["spec"].get("permissions", {}))
    return problems


def database_problems(objects: list[Obj]) -> list[str]:
    """Prod: one CloudNativePG Cluster per service, its database and owner named after it
    (its generated Secret <service>-db-app is what the Deployment reads)."""
    problems = []
    for entry in SERVICES:
        cluster = named(objects, "Cluster", f"{entry.name}-db")
        if cluster is None or cluster["apiVersion"] != "postgresql.cnpg.io/v1":
            problems.append(f"{entry.name}: no postgresql.cnpg.io/v1 Cluster {entry.name}-db")
            continue
        spec = cluster["spec"]
        initdb = spec.get("bootstrap", {}).get("initdb", {})
        if (initdb.get("database"), initdb.get("owner")) != (entry.name, entry.name):
            problems.append(
                f"{entry.name}-db: bootstrap.initdb database and owner must be {entry.name}"
            )
        if (
            not spec.get("storage", {}).get("size")
            or {"requests", "limits"} - spec.get("resources", {}).keys()
        ):
            problems.append(f"{entry.name}-db: needs storage.size and resources")
    return problems


def overlay_problems(objects: list[Obj], production: bool) -> list[str]:
    problems = [
        *schema_problems(objects),
        *workload_problems(objects),
        *exposure_problems(objects),
        *credential_leak_problems(objects),
        *registry_problems(objects),
    ]
    for entry in SERVICES:
        problems += service_problems(objects, entry, production)
    if production:
        problems += inline_secret_problems(objects)
        problems += broker_problems(objects)
        problems += database_problems(objects)
    return problems


def per_service_problems(objects: list[Obj], entry: ServiceEntry) -> list[str]:
    """`kubectl apply -k overlays/prod/<service>` touches that service alone."""
    problems = [
        f"{label(o)}: not {entry.name}'s (label app.kubernetes.io/name)"
        for o in objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/name") != entry.name
    ]
    deployments = [d["metadata"]["name"] for d in of_kind(objects, "Deployment")]
    if deployments != [entry.name]:
        problems.append(f"{entry.name}'s apply target renders Deployments {deployments}")
    return problems


# --- the rendered overlays -------------------------------------------------------------


@pytest.mark.parametrize(("directory", "production"), [(DEV, False), (PROD, True)])
def test_an_overlay_meets_every_check(directory: str, production: bool) -> None:
    assert overlay_problems(rendered(directory), production) == []


@pytest.mark.parametrize("entry", SERVICES, ids=lambda e: e.name)
def test_one_service_applies_alone(entry: ServiceEntry) -> None:
    objects = rendered(f"{PROD}/{entry.name}")
    assert schema_problems(objects) == []
    assert per_service_problems(objects, entry) == []
    assert service_problems(objects, entry, production=True) == []
    assert named(objects, "Deployment", entry.name)["spec"]["replicas"] == 2


def test_the_whole_of_prod_is_the_shared_part_and_each_service() -> None:
    def keys(objects: list[Obj]) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"]) for o in objects}

    parts = keys(rendered(f"{PROD}/shared"))
    for entry in SERVICES:
        parts |= keys(rendered(f"{PROD}/{entry.name}"))
    assert keys(rendered(PROD)) == parts


def test_every_registered_service_has_its_manifests() -> None:
    for entry in SERVICES:
        for directory in (K8S / "base" / entry.name, K8S / PROD / entry.name):
            assert (directory / "kustomization.yaml").is_file(), f"{directory} is missing"
    for top in ("base", PROD):
        listed = yaml.safe_load((K8S / top / "kustomization.yaml").read_text())["resources"]
        assert {entry.name for entry in SERVICES} <= set(listed), f"{top} must list every service"


def test_base_carries_no_secret() -> None:
    objects = rendered("base")
    assert of_kind(objects, "Secret") == []
    assert credential_leak_problems(objects) == []


def dev_secret(objects: list[Obj], name: str) -> Obj:
    """A Secret the dev overlay generates, by its name before kustomize's hash."""
    return next(
        s for s in of_kind(objects, "Secret") if without_hash(s["metadata"]["name"]) == name
    )


def secret_value(secret: Obj, key: str) -> str:
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    return base64.b64decode(secret["data"][key]).decode()


def file_values(obj: Obj) -> dict[str, str]:
    """A ConfigMap's or Secret's files, decoded."""
    if obj["kind"] == "ConfigMap":
        return dict(obj.get("data", {}))
    return {key: secret_value(obj, key) for key in secret_keys(obj)}


def secret_keys(secret: Obj) -> set[str]:
    return {*secret.get("data", {}), *secret.get("stringData", {})}


def dev_definitions(objects: list[Obj]) -> dict[str, Any]:
    secret = dev_secret(objects, "rabbitmq-definitions")
    return json.loads(secret_value(secret, DEV_DEFINITIONS))


def dev_rabbitmq_passwords() -> dict[str, str]:
    """The dev placeholders, by the variable `orderctl provision rabbitmq` reads each from."""
    return {
        provision.rabbitmq_password_variable(entry): f"dev-only-{entry.name}" for entry in SERVICES
    } | {provision.ADMIN_PASSWORD_VARIABLE: "dev-only-admin"}


def script_accounts(script: str) -> dict[str, str]:
    """The roles an `orderctl provision postgres` script creates, each owning the database of
    its name: role -> the environment variable its password is read from (\\getenv)."""
    variables = dict(re.findall(r"^\\getenv (\w+) (\w+)$", script, re.M))
    rows = re.findall(r"^  \('([^']+)', :'(\w+)'\)[,;]$", script, re.M)
    return {role: variables.get(psql, f"<no \\getenv {psql}>") for role, psql in rows}


def dev_postgres_provisioning(objects: list[Obj]) -> tuple[str, dict[str, str]] | str:
    """The script the dev postgres runs on first start, and the values of its container's
    environment from Secrets; or what is missing."""
    statefulset = named(objects, "StatefulSet", "postgres")
    if statefulset is None:
        return "dev: no StatefulSet postgres"
    pod = statefulset["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "postgres")
    mount = next(
        (m for m in container.get("volumeMounts", []) if m["mountPath"] == DEV_INITDB), None
    )
    volume = next((v for v in pod.get("volumes", []) if mount and v["name"] == mount["name"]), {})
    source = (
        named(objects, "ConfigMap", volume["configMap"]["name"])
        if "configMap" in volume
        else named(objects, "Secret", volume["secret"]["secretName"])
        if "secret" in volume
        else None
    )
    script = file_values(source).get(DEV_POSTGRES_SCRIPT) if source else None
    if script is None:
        return f"dev: postgres does not mount {DEV_POSTGRES_SCRIPT} at {DEV_INITDB}"
    env = {}
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        secret = named(objects, "Secret", ref["name"]) if ref else None
        if secret is not None and ref["key"] in secret_keys(secret):
            env[variable["name"]] = secret_value(secret, ref["key"])
    return script, env


def dev_provisioning_problems(objects: list[Obj]) -> list[str]:
    """Dev's RabbitMQ definitions and PostgreSQL script give each service what prod does, with
    the credentials its dev Secrets carry."""
    definitions = dev_definitions(objects)
    problems = []
    exchanges = {(e["name"], e["vhost"], e["type"], e["durable"]) for e in definitions["exchanges"]}
    if ("events", "orderflow", "topic", True) not in exchanges:
        problems.append("dev: no durable topic exchange events in vhost orderflow")
    users = {u["name"]: u.get("password") for u in definitions["users"]}
    permissions = {p["user"]: p for p in definitions["permissions"] if p["vhost"] == "orderflow"}
    postgres = dev_postgres_provisioning(objects)
    if isinstance(postgres, str):
        problems.append(postgres)
        script, env = "", {}
    else:
        script, env = postgres
    accounts = script_accounts(script)
    for entry in SERVICES:
        granted = permissions.get(entry.name, {})
        problems += permission_problems(
            entry.name, {op: granted[op] for op in ("configure", "write", "read") if op in granted}
        )
        broker = urlsplit(secret_value(dev_secret(objects, f"{entry.name}-rabbitmq"), "url"))
        if (broker.username, broker.path, users.get(broker.username or "")) != (
            entry.name,
            "/orderflow",
            broker.password,
        ):
            problems.append(f"{entry.name}: its dev broker URL is not its user of vhost orderflow")
        database = urlsplit(secret_value(dev_secret(objects, f"{entry.name}-db-app"), "uri"))
        variable = accounts.get(database.username or "")
        if (database.username, database.path) != (entry.name, f"/{entry.name}") or not variable:
            problems.append(
                f"{entry.name}: its dev database URL is no role of {DEV_POSTGRES_SCRIPT} "
                "owning its database"
            )
        elif env.get(variable) != database.password:
            problems.append(
                f"{entry.name}: postgres's {variable} (from a Secret) is not the password of "
                f"its dev database URL"
            )
    return problems


def test_dev_provisions_each_service_as_prod_does() -> None:
    assert dev_provisioning_problems(rendered(DEV)) == []


def test_the_dev_provisioning_files_are_what_orderctl_provision_renders() -> None:
    """Never edited by hand: a new service, or a changed permission, means regenerating them."""
    target = f"deploy/k8s/{DEV}"
    orderctl = "python3 -m uv run python -m orderctl provision"
    passwords = dev_rabbitmq_passwords()
    regenerate_postgres = f"{orderctl} postgres > {target}/{DEV_POSTGRES_SCRIPT}"
    regenerate_rabbitmq = (
        " ".join([*(f"{variable}={value}" for variable, value in passwords.items()), orderctl])
        + f" rabbitmq > {target}/{DEV_DEFINITIONS}"
    )
    script = provision.postgres_script()
    definitions = provision.render_definitions(
        provision.rabbitmq_definitions(passwords.__getitem__)
    )
    assert (K8S / DEV / DEV_POSTGRES_SCRIPT).read_text() == script, (
        f"{DEV_POSTGRES_SCRIPT} is not what orderctl renders; regenerate it, from the repository "
        f"root: {regenerate_postgres}"
    )
    assert (K8S / DEV / DEV_DEFINITIONS).read_text() == definitions, (
        f"{DEV_DEFINITIONS} is not what orderctl renders; regenerate it, from the repository "
        f"root: {regenerate_rabbitmq}"
    )


# --- each check fails on what it is there to catch ----------------------------------------


def deployment(objects: list[Obj], name: str) -> Obj:
    found = named(objects, "Deployment", name)
    assert found is not None
    return found


def pod(objects: list[Obj], name: str) -> Obj:
    return deployment(objects, name)["spec"]["template"]["spec"]


def settings_map(objects: list[Obj], name: str) -> dict[str, str]:
    ref = app_container(deployment(objects, name))["envFrom"][0]["configMapRef"]["name"]
    return named(objects, "ConfigMap", ref)["data"]


def env(objects: list[Obj], name: str, container: str) -> dict[str, Obj]:
    found = next(c for c in containers(pod(objects, name)) if c["name"] == container)
    return {e["name"]: e for e in found["env"]}


Breakage = Callable[[list[Obj]], None]


def with_permission(service: str, **regexes: str) -> Breakage:
    """A breakage: the service's prod Permission with these regexes instead."""
    return lambda o: named(o, "Permission", service)["spec"]["permissions"].update(regexes)


BREAKAGES: list[tuple[str, Breakage, str]] = [
    (
        "readiness on the liveness path",
        lambda o: app_container(deployment(o, "email"))["readinessProbe"]["httpGet"].update(
            path="/health/live"
        ),
        "readinessProbe must GET /health/ready",
    ),
    (
        "liveness on readiness: a broker outage would restart pods",
        lambda o: app_container(deployment(o, "orders"))["livenessProbe"]["httpGet"].update(
            path="/health/ready"
        ),
        "livenessProbe must GET /health/live",
    ),
    (
        "no startup probe",
        lambda o: app_container(deployment(o, "shipping")).pop("startupProbe"),
        "startupProbe must GET /health/live",
    ),
    (
        "a writable root filesystem in the init container",
        lambda o: pod(o, "inventory")["initContainers"][0]["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
        "readOnlyRootFilesystem must be true",
    ),
    (
        "capabilities kept",
        lambda o: app_container(deployment(o, "orders"))["securityContext"].update(
            capabilities={"drop": []}
        ),
        "capabilities must drop ALL",
    ),
    (
        "root",
        lambda o: pod(o, "email")["securityContext"].update(runAsUser=0, runAsNonRoot=False),
        "numeric non-root user",
    ),
    (
        "another user than the image's",
        lambda o: pod(o, "email")["securityContext"].update(runAsUser=1000),
        "runAsUser must be the image's user",
    ),
    (
        "privilege escalation",
        lambda o: app_container(deployment(o, "email"))["securityContext"].update(
            allowPrivilegeEscalation=True
        ),
        "allowPrivilegeEscalation must be false",
    ),
    (
        "no /tmp",
        lambda o: pod(o, "shipping").update(volumes=[]),
        "needs an emptyDir at /tmp",
    ),
    (
        "an init container without limits",
        lambda o: pod(o, "orders")["initContainers"][0]["resources"].pop("limits"),
        "no limits for cpu, memory",
    ),
    (
        "the broker's pods without requests",
        lambda o: named(o, "RabbitmqCluster", "rabbitmq")["spec"]["resources"].pop("requests"),
        "resources needs requests and limits",
    ),
    (
        "a grace period shorter than preStop plus the graceful timeout",
        lambda o: pod(o, "inventory").update(terminationGracePeriodSeconds=15),
        "terminationGracePeriodSeconds 15 must exceed",
    ),
    (
        "a PDB that selects nothing",
        lambda o: named(o, "PodDisruptionBudget", "email")["spec"]["selector"].update(
            matchLabels={"app.kubernetes.io/name": "e-mail"}
        ),
        "email: no PodDisruptionBudget selects its pods",
    ),
    (
        "a PDB that blocks every drain",
        lambda o: named(o, "PodDisruptionBudget", "orders")["spec"].update(maxUnavailable=0),
        "allows no disruption",
    ),
    (
        "an inline Secret",
        lambda o: o.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "orders-rabbitmq"},
                "stringData": {"url": "amqp://orders:hunter2@rabbitmq/orderflow"},
            }
        ),
        "a Secret with inline data",
    ),
    (
        "a database URL written into the Deployment",
        lambda o: env(o, "shipping", "app")["SHIPPING_DATABASE_URL"].update(
            value="postgresql://shipping:hunter2@db/shipping", valueFrom={}
        ),
        "SHIPPING_DATABASE_URL is inline",
    ),
    (
        "the broker URL from another Secret",
        lambda o: env(o, "orders", "migrate")["ORDERS_RABBITMQ_URL"]["valueFrom"][
            "secretKeyRef"
        ].update(name="rabbitmq-default-user"),
        "ORDERS_RABBITMQ_URL must come from Secret orders-rabbitmq key url",
    ),
    (
        "a service without the operator token public key",
        lambda o: app_container(deployment(o, "inventory"))["env"].remove(
            env(o, "inventory", "app")["INVENTORY_OPERATOR_TOKEN_PUBLIC_KEY"]
        ),
        "INVENTORY_OPERATOR_TOKEN_PUBLIC_KEY must come from ConfigMap operator-token-public-key",
    ),
    (
        "the order-token secret written into the Deployment",
        lambda o: env(o, "orders", "app")["ORDERS_ORDER_TOKEN_SECRET"].update(
            value="hunter2" * 5, valueFrom={}
        ),
        "ORDERS_ORDER_TOKEN_SECRET is inline",
    ),
    (
        "the order-token secret from another Secret",
        lambda o: env(o, "orders", "migrate")["ORDERS_ORDER_TOKEN_SECRET"]["valueFrom"][
            "secretKeyRef"
        ].update(name="orders-rabbitmq"),
        "ORDERS_ORDER_TOKEN_SECRET must come from Secret orders-order-token key secret",
    ),
    (
        "inventory behind a LoadBalancer",
        lambda o: named(o, "Service", "inventory")["spec"].update(type="LoadBalancer"),
        "type LoadBalancer",
    ),
    (
        "an Ingress to shipping",
        lambda o: named(o, "Ingress", "orders")["spec"]["rules"][0]["http"]["paths"][0]["backend"][
            "service"
        ].update(name="shipping"),
        "exposes ['shipping']",
    ),
    (
        "inventory open to every namespace",
        lambda o: named(o, "NetworkPolicy", "inventory")["spec"]["ingress"][0]["from"].append(
            {"namespaceSelector": {}}
        ),
        "NetworkPolicy/inventory: admits traffic from outside the namespace",
    ),
    (
        "email's pods not isolated",
        lambda o: o.remove(named(o, "NetworkPolicy", "email")),
        "email: no NetworkPolicy isolates its pods",
    ),
    (
        "a Service selecting no pod",
        lambda o: named(o, "Service", "orders")["spec"]["selector"].update(
            {"app.kubernetes.io/name": "order"}
        ),
        "its Service's selector does not match its pods",
    ),
    (
        "a service missing",
        lambda o: o.remove(deployment(o, "shipping")),
        "shipping: no Deployment",
    ),
    (
        "a Deployment of no registered service",
        lambda o: o.append(
            {**copy.deepcopy(deployment(o, "email")), "metadata": {"name": "billing"}}
        ),
        "Deployment/billing: not a service in servicekit.registry",
    ),
    (
        "an unknown field",
        lambda o: deployment(o, "orders")["spec"].update(replica=2),
        "Deployment/orders: schema:",
    ),
    (
        "an untagged image",
        lambda o: app_container(deployment(o, "email")).update(image="ghcr.io/orderflow/email"),
        "is not ghcr.io/orderflow/email:<tag>",
    ),
    (
        "no migrations before serving",
        lambda o: pod(o, "inventory").pop("initContainers"),
        "no init container running `inventory migrate`",
    ),
    (
        "a service allowed to configure `events`",
        with_permission("email", configure=".*"),
        "email: may configure `events`",
    ),
    (
        "no write on the default exchange, through which the retry chain dead-letters",
        with_permission("shipping", write=r"^(shipping\..+|events)$"),
        "shipping: cannot write amq.default",
    ),
    (
        "another service's queues readable",
        with_permission("email", read=r"^(email\..+|events|orders\..+)$"),
        "email: may read or write another service's queues",
    ),
    (
        "its own queues not configurable",
        with_permission("inventory", configure=r"^inventory\.work$"),
        "inventory: cannot configure, write and read its own queues",
    ),
    (
        "permissions that differ from servicekit's, even harmlessly",
        with_permission("orders", configure=r"^orders\.(.+)$"),
        "are not servicekit.topology.broker_permissions('orders')",
    ),
    (
        "a broker of one node",
        lambda o: named(o, "RabbitmqCluster", "rabbitmq")["spec"].update(replicas=1),
        "3 replicas",
    ),
    (
        "a database owned by someone else",
        lambda o: named(o, "Cluster", "email-db")["spec"]["bootstrap"]["initdb"].update(
            owner="app"
        ),
        "bootstrap.initdb database and owner must be email",
    ),
    (
        "a broker user with generated credentials",
        lambda o: named(o, "User", "inventory")["spec"].pop("importCredentialsSecret"),
        "no User importing Secret inventory-rabbitmq",
    ),
]


SETTING_BREAKAGES = [
    # (service, ConfigMap key, its new value or None to remove it, a problem it must cause)
    ("shipping", "SHIPPING_GRACEFUL_TIMEOUT", "40", "+ SHIPPING_GRACEFUL_TIMEOUT 40.0 s"),
    ("orders", "ORDERS_GRACEFUL_TIMEOUT", None, "ORDERS_GRACEFUL_TIMEOUT must be set"),
    ("orders", "ORDERS_GRACEFULL_TIMEOUT", "10", "ORDERS_GRACEFULL_TIMEOUT is no setting"),
    ("inventory", "INVENTORY_PREFETCH", "0", "its settings are refused"),
    ("email", "EMAIL_HTTP_HOST", "127.0.0.1", "EMAIL_HTTP_HOST is '127.0.0.1'"),
    ("email", "EMAIL_ENVIRONMENT", "development", "EMAIL_ENVIRONMENT is 'development'"),
    ("email", "EMAIL_SMTP_HOST", None, "EMAIL_SMTP_HOST must be set"),
    ("email", "EMAIL_SMTP_PASSWORD", "hunter2", "EMAIL_SMTP_PASSWORD is a credential"),
    ("orders", "ORDERS_ORDER_TOKEN_SECRET", "hunter2" * 5, "ORDERS_ORDER_TOKEN_SECRET is a cred"),
]


def setting_breakage(service: str, key: str, value: str | None) -> Breakage:
    def breakage(objects: list[Obj]) -> None:
        settings = settings_map(objects, service)
        if value is None:
            settings.pop(key)
        else:
            settings[key] = value

    return breakage


BREAKAGES += [
    (f"{key}={value}", setting_breakage(service, key, value), expected)
    for service, key, value, expected in SETTING_BREAKAGES
]


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [(breakage, expected) for _, breakage, expected in BREAKAGES],
    ids=[name for name, _, _ in BREAKAGES],
)
def test_each_check_catches_its_breakage(breakage: Breakage, expected: str) -> None:
    objects = rendered(PROD)
    breakage(objects)
    problems = overlay_problems(objects, production=True)
    assert any(expected in problem for problem in problems), problems


def test_a_service_apply_target_with_another_service_in_it_is_caught() -> None:
    objects = rendered(f"{PROD}/orders") + of_kind(rendered(f"{PROD}/email"), "Deployment")
    problems = per_service_problems(objects, SERVICES[0])
    assert "Deployment/email: not orders's (label app.kubernetes.io/name)" in problems


def with_definitions(objects: list[Obj], change: Callable[[dict[str, Any]], None]) -> None:
    definitions = dev_definitions(objects)
    change(definitions)
    secret = dev_secret(objects, "rabbitmq-definitions")
    secret.pop("data")
    secret["stringData"] = {DEV_DEFINITIONS: json.dumps(definitions)}


def with_secret_value(objects: list[Obj], name: str, key: str, value: str) -> None:
    dev_secret(objects, name)["data"][key] = base64.b64encode(value.encode()).decode()


def with_script(objects: list[Obj], change: Callable[[str], str]) -> None:
    config_map = next(
        c
        for c in of_kind(objects, "ConfigMap")
        if without_hash(c["metadata"]["name"]) == "postgres-provision"
    )
    config_map["data"][DEV_POSTGRES_SCRIPT] = change(config_map["data"][DEV_POSTGRES_SCRIPT])


def inline_postgres_env(objects: list[Obj], name: str, value: str) -> None:
    statefulset = named(objects, "StatefulSet", "postgres")
    assert statefulset is not None
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    variable = next(e for e in container["env"] if e["name"] == name)
    variable.clear()
    variable.update(name=name, value=value)


def user(definitions: dict[str, Any], name: str) -> dict[str, Any]:
    return next(u for u in definitions["users"] if u["name"] == name)


def permission(definitions: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in definitions["permissions"] if p["user"] == name)


OLD_RULE_EMAIL = {**broker_permissions("email")._asdict(), "write": r"^(email\..+|events)$"}
"""email's permissions before every service needed amq.default."""

DEV_BREAKAGES: list[tuple[str, Breakage, list[str]]] = [
    (
        "a broker password that is not the URL's",
        lambda o: with_definitions(o, lambda d: user(d, "email").update(password="changed")),
        ["email: its dev broker URL is not its user of vhost orderflow"],
    ),
    (
        "a database password that is not the URI's",
        lambda o: with_secret_value(
            o, "postgres-service-passwords", "INVENTORY_DB_PASSWORD", "changed"
        ),
        [
            "inventory: postgres's INVENTORY_DB_PASSWORD (from a Secret) is not the password "
            "of its dev database URL"
        ],
    ),
    (
        "a database password inline, from no Secret",
        lambda o: inline_postgres_env(o, "ORDERS_DB_PASSWORD", "dev-only-orders"),
        [
            "orders: postgres's ORDERS_DB_PASSWORD (from a Secret) is not the password of its "
            "dev database URL"
        ],
    ),
    (
        "a service without its role",
        lambda o: with_script(o, lambda s: s.replace("  ('shipping', :'shipping_password');", "")),
        [f"shipping: its dev database URL is no role of {DEV_POSTGRES_SCRIPT} owning its database"],
    ),
    (
        "no first-start script",
        lambda o: named(o, "StatefulSet", "postgres")["spec"]["template"]["spec"].update(
            volumes=[]
        ),
        [f"dev: postgres does not mount {DEV_POSTGRES_SCRIPT} at {DEV_INITDB}"]
        + [
            f"{entry.name}: its dev database URL is no role of {DEV_POSTGRES_SCRIPT} owning its "
            "database"
            for entry in SERVICES
        ],
    ),
    (
        "dev permissions of the old rule, amq.default for request-reply only",
        lambda o: with_definitions(o, lambda d: permission(d, "email").update(OLD_RULE_EMAIL)),
        [
            f"email: broker permissions {OLD_RULE_EMAIL} are not "
            "servicekit.topology.broker_permissions('email') "
            f"{broker_permissions('email')._asdict()}",
            "email: cannot write amq.default: its retry chain dead-letters through the default "
            "exchange (and request-reply publishes through it)",
        ],
    ),
]


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [(breakage, expected) for _, breakage, expected in DEV_BREAKAGES],
    ids=[name for name, _, _ in DEV_BREAKAGES],
)
def test_dev_provisioning_that_disagrees_is_caught(breakage: Breakage, expected: list[str]) -> None:
    objects = rendered(DEV)
    breakage(objects)
    assert dev_provisioning_problems(objects) == expected


def test_a_missing_kubectl_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    _kustomize.cache_clear()
    try:
        with pytest.raises(pytest.fail.Exception, match="kubectl is not on PATH"):
            _kustomize(DEV)
    finally:
        _kustomize.cache_clear()
