"""What the console is told: where the services and the broker are, the operator's public
key, and where traces are shown."""

import os
import string
from collections.abc import Mapping
from dataclasses import dataclass

from servicekit.auth import OperatorPublicKey

from ..audit import AuditConfig
from ..errors import CommandError
from .security import is_loopback

KEY_VARIABLE = "OPERATOR_TOKEN_PUBLIC_KEY"
"""The services' own variable: the console verifies operator tokens with the same key."""
ENVIRONMENT_VARIABLE = "ENVIRONMENT"


@dataclass(frozen=True)
class ConsoleConfig:
    services: AuditConfig
    """Each service's URL, the RabbitMQ URL and the operator token sent to the services."""
    operator_key: OperatorPublicKey | None = None
    """Verifies the operator token every page and action needs; None: the console is open."""
    trace_url: str | None = None
    """A trace UI's address for one order, with `{trace_id}` or `{order_id}` in it."""

    @classmethod
    def from_env(
        cls,
        *,
        service_urls: Mapping[str, str] | None = None,
        amqp_url: str | None = None,
        trace_url: str | None = None,
        host: str = "127.0.0.1",
        env: Mapping[str, str] = os.environ,
    ) -> "ConsoleConfig":
        """The services as `orderctl audit` finds them, the key from OPERATOR_TOKEN_PUBLIC_KEY
        (PEM or a PEM file's path). CommandError for a bad key, for none in production
        (ENVIRONMENT=production), and for an open console on any host but the loopback."""
        services = AuditConfig.from_env(service_urls=service_urls, amqp_url=amqp_url, env=env)
        key = None
        if setting := env.get(KEY_VARIABLE):
            try:
                key = OperatorPublicKey.from_setting(setting)
            except ValueError as exc:
                raise CommandError(f"{KEY_VARIABLE}: {exc}") from None
        if key is None and env.get(ENVIRONMENT_VARIABLE) == "production":
            raise CommandError(
                f"{KEY_VARIABLE} is not set: in production the console lets in operators only"
            )
        if key is None and not is_loopback(host):
            raise CommandError(
                f"an open console listens on the loopback only: set {KEY_VARIABLE} to serve "
                f"it on {host}"
            )
        if trace_url and not trace_fields(trace_url) <= TRACE_FIELDS:
            raise CommandError(
                f"--trace-url {trace_url!r}: only {{trace_id}} and {{order_id}} are filled in"
            )
        return cls(services, key, trace_url)

    def trace_link(self, order: Mapping[str, object]) -> str | None:
        """The order's trace in the trace UI; None without a trace UI, or when the address
        needs a trace id the order's data does not carry."""
        if not self.trace_url:
            return None
        values = {name: order.get(name) for name in TRACE_FIELDS}
        if any(not values[name] for name in trace_fields(self.trace_url)):
            return None
        return self.trace_url.format_map(values)


TRACE_FIELDS = frozenset({"trace_id", "order_id"})


def trace_fields(template: str) -> set[str]:
    """The `{names}` in a trace address."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}
