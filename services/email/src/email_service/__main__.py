"""`python -m email_service` and the `email` command: serve, migrate or check health."""

from servicekit.cli import main

from .config import EmailSettings
from .main import MIGRATIONS, create_app


def run() -> None:
    main("email", EmailSettings, create_app, MIGRATIONS)


if __name__ == "__main__":
    run()
