"""`python -m orders` and the `orders` command: serve, migrate or check health."""

from servicekit.cli import main

from .config import OrdersSettings
from .main import MIGRATIONS, create_app


def run() -> None:
    main("orders", OrdersSettings, create_app, MIGRATIONS)


if __name__ == "__main__":
    run()
