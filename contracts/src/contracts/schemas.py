"""JSON Schema rendering: the text of every contract's schema file, as the classes say now.

The files in `contracts/schemas/` are what other teams and tools read. Checking them is
`contracts.compatibility`'s job, writing them `contracts.schema_files`'.
"""

import json
from pathlib import Path

from .registry import ALL_EVENTS, REQUEST_REPLY_MESSAGES

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
"""Where the schema files are committed."""


def render_schemas() -> dict[str, str]:
    """File name -> JSON text, one per event class and version, and per request-reply message."""
    models = {
        **{f"event:{cls.routing_key()}": cls for cls in ALL_EVENTS},
        **{f"message:{name}": model for name, model in REQUEST_REPLY_MESSAGES.items()},
    }
    rendered = {}
    for urn, model in models.items():
        schema = model.model_json_schema()
        schema["$id"] = f"urn:orderflow:{urn}"
        name = urn.split(":", 1)[1]
        rendered[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered
