from pathlib import Path

from servicekit.cli import main

from .config import ShippingSettings
from .main import create_app

main("shipping", ShippingSettings, create_app, Path(__file__).resolve().parents[2] / "migrations")
