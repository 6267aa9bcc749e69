from pathlib import Path

from servicekit.cli import main

from .config import EmailSettings
from .main import create_app

main("email", EmailSettings, create_app, Path(__file__).resolve().parents[2] / "migrations")
