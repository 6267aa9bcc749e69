"""`python -m shipping` and the `shipping` command: serve, migrate or check health."""

from servicekit.cli import main

from .config import ShippingSettings
from .main import MIGRATIONS, create_app


def run() -> None:
    main("shipping", ShippingSettings, create_app, MIGRATIONS)


if __name__ == "__main__":
    run()
