"""The README is the user's door: every setting a service reads is documented there."""

from pathlib import Path

import pytest

from email_service.config import EmailSettings
from inventory.config import InventorySettings
from orders.config import OrdersSettings
from servicekit.settings import ServiceSettings
from shipping.config import ShippingSettings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize(
    "settings_class", [OrdersSettings, EmailSettings, InventorySettings, ShippingSettings]
)
def test_every_setting_is_documented(settings_class: type[ServiceSettings]) -> None:
    prefix = settings_class.model_config["env_prefix"]
    assert f"`{prefix}`" in README
    for name in settings_class.model_fields:
        shared = name in ServiceSettings.model_fields
        documented = (
            f"`{name.upper()}`" in README if shared else f"{prefix}{name.upper()}" in README
        )
        assert documented, f"{prefix}{name.upper()} is not in README.md"
