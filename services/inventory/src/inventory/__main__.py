from servicekit.cli import main

from .config import InventorySettings
from .main import MIGRATIONS, create_app

main("inventory", InventorySettings, create_app, MIGRATIONS)
