"""The services of this system, listed once: every tool that needs them reads this list.

A service's own code reads its entry for its env prefix, default port and database; the
launcher, the benchmark, the AsyncAPI writer and the operator's CLI read the whole list.
Nothing here imports a service: it names them.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    """Queue, database and log name (`<name>.work`, `.../<name>`)."""
    package: str
    """The Python package: `python -m <package> serve`."""
    env_prefix: str
    default_port: int

    @property
    def default_database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.name}"

    @property
    def default_url(self) -> str:
        """Where its HTTP API listens with the default settings."""
        return f"http://127.0.0.1:{self.default_port}"


SERVICES = (
    ServiceEntry("orders", "orders", "ORDERS_", 8001),
    ServiceEntry("email", "email_service", "EMAIL_", 8002),
    ServiceEntry("inventory", "inventory", "INVENTORY_", 8003),
    ServiceEntry("shipping", "shipping", "SHIPPING_", 8004),
)

SERVICE_NAMES = tuple(service.name for service in SERVICES)


def service(name: str) -> ServiceEntry:
    """The entry named `name`; KeyError naming the known services otherwise."""
    for entry in SERVICES:
        if entry.name == name:
            return entry
    raise KeyError(f"unknown service {name!r}; known: {', '.join(SERVICE_NAMES)}")
