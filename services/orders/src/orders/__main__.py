from servicekit.cli import main

from .config import OrdersSettings
from .main import MIGRATIONS, create_app

main("orders", OrdersSettings, create_app, MIGRATIONS)
