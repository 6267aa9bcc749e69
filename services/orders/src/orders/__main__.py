from pathlib import Path

from servicekit.cli import main

from .config import OrdersSettings
from .main import create_app

main("orders", OrdersSettings, create_app, Path(__file__).resolve().parents[2] / "migrations")
