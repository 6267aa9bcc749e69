"""The README is the user's door: every setting a service reads is documented there."""

import importlib
from pathlib import Path

import pytest

from servicekit.registry import SERVICES, ServiceEntry
from servicekit.settings import ServiceSettings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def settings_class(entry: ServiceEntry) -> type[ServiceSettings]:
    """The service's one settings class, from its `config` module."""
    config = importlib.import_module(f"{entry.package}.config")
    (found,) = {
        value
        for value in vars(config).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value is not ServiceSettings
    }
    return found


@pytest.mark.parametrize("entry", SERVICES, ids=lambda entry: entry.name)
def test_every_setting_is_documented(entry: ServiceEntry) -> None:
    settings = settings_class(entry)
    prefix = settings.model_config["env_prefix"]
    assert prefix == entry.env_prefix
    assert f"`{prefix}`" in README
    for name in settings.model_fields:
        shared = name in ServiceSettings.model_fields
        documented = (
            f"`{name.upper()}`" in README if shared else f"{prefix}{name.upper()}" in README
        )
        assert documented, f"{prefix}{name.upper()} is not in README.md"
