"""Write (or check) every service's committed AsyncAPI document: `make asyncapi`.

    python deploy/asyncapi_documents.py [--check]

Each document is `services/<svc>/asyncapi.json`, rendered from the app the service's
`create_app()` builds with its default settings; the list of services is the registry's.
"""

import argparse
import importlib
import sys
from pathlib import Path

from servicekit.asyncapi import render
from servicekit.registry import SERVICES, ServiceEntry

ROOT = Path(__file__).resolve().parents[1]


def committed_path(entry: ServiceEntry) -> Path:
    """`services/<svc>/asyncapi.json`, beside the service's `src/`."""
    return ROOT / "services" / entry.name / "asyncapi.json"


def render_service(entry: ServiceEntry) -> str:
    """The document of the app `<package>.main.create_app()` builds, with its defaults."""
    create_app = importlib.import_module(f"{entry.package}.main").create_app
    return render(create_app())


def main() -> int:
    parser = argparse.ArgumentParser(description="Write each service's asyncapi.json.")
    parser.add_argument("--check", action="store_true", help="fail if a committed file drifts")
    args = parser.parse_args()
    drifted = False
    for entry in SERVICES:
        path, text = committed_path(entry), render_service(entry)
        if not args.check:
            path.write_text(text)
        elif not path.is_file() or path.read_text() != text:
            print(f"asyncapi drift: {path}; run `make asyncapi`", file=sys.stderr)
            drifted = True
    return 1 if drifted else 0


if __name__ == "__main__":
    sys.exit(main())
