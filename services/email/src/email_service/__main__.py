from servicekit.cli import main

from .config import EmailSettings
from .main import MIGRATIONS, create_app

main("email", EmailSettings, create_app, MIGRATIONS)
