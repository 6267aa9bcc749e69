from servicekit.cli import main

from .config import ShippingSettings
from .main import MIGRATIONS, create_app

main("shipping", ShippingSettings, create_app, MIGRATIONS)
