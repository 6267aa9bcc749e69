from pathlib import Path

from servicekit.cli import main

from .config import InventorySettings
from .main import create_app

main("inventory", InventorySettings, create_app, Path(__file__).resolve().parents[2] / "migrations")
