"""`python -m inventory` and the `inventory` command: serve, migrate or check health."""

from servicekit.cli import main

from .config import InventorySettings
from .main import MIGRATIONS, create_app


def run() -> None:
    main("inventory", InventorySettings, create_app, MIGRATIONS)


if __name__ == "__main__":
    run()
