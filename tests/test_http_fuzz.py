"""Every service's HTTP API attacked from its own OpenAPI document (schemathesis), on the
system as `make run` starts it: no request, whether the document allows it or not, makes a
server error, and every answer has a status the document lists, in the shape it gives. And
text PostgreSQL cannot store is refused wherever a request body holds text, naming the field.

The requests are drawn from a fixed seed (`derandomize`), so a run in CI is the run on your
machine; no shrinking: a failure lists each request that failed as a curl command that
replays it.
"""

import itertools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from servicekit.registry import SERVICE_NAMES

pytestmark = pytest.mark.e2e

EXAMPLES = 50
"""Requests drawn for each operation, allowed and forbidden each: bounded, so that the module
takes well under a minute and a half on a busy machine."""

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]

UNSTORABLE = {
    "NUL": ("A\x00B", "Value error, text must not contain NUL (U+0000)"),
    "lone surrogate": ("A\ud800B", "Value error, text must not contain a lone surrogate (U+D800)"),
}
"""Text PostgreSQL cannot store, sent as JSON escapes (`\\u0000`, `\\ud800`), and the error
it is."""


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_every_answer_is_one_the_document_describes_and_none_is_a_server_error(
    system, service
) -> None:
    base_url = system.stack.url(service)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []

    for result, mode in itertools.product(schema.get_all_operations(), GenerationMode):
        operation = result.ok()
        if mode is GenerationMode.NEGATIVE and not has_input(operation):
            continue  # it takes nothing that could be made invalid

        @settings(
            max_examples=EXAMPLES,
            database=None,
            derandomize=True,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],  # every failure is reported, unshrunk
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(mode))
        def attack(case: schemathesis.Case) -> None:
            try:
                case.call_and_validate(base_url=base_url, checks=CHECKS)
            except* AssertionError as found:  # a schemathesis Failure, or a group of them
                problems = "\n  ".join(str(failure) for failure in found.exceptions)
                failures.append(f"{case.as_curl_command(base_url=base_url)}\n  {problems}")

        attack()

    assert failures == [], "\n".join(failures)


def has_input(operation: schemathesis.APIOperation) -> bool:
    return bool(operation.body) or any(True for _ in operation.iter_parameters())


def resolved(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def text_fields(document: dict, schema: dict, path: tuple = ()) -> Iterator[tuple]:
    """The path of each string a body of `schema` can hold; an array's, as its first item."""
    schema = resolved(document, schema)
    for option in schema.get("anyOf", ()):
        yield from text_fields(document, option, path)
    if schema.get("type") == "string":
        yield path
    for name, field in schema.get("properties", {}).items():
        yield from text_fields(document, field, (*path, name))
    if "items" in schema:
        yield from text_fields(document, schema["items"], (*path, 0))


def holding(path: tuple, text: str) -> object:
    """The least JSON with `text` at `path`, e.g. `{"items": [{"name": text}]}`."""
    body: object = text
    for step in reversed(path):
        body = [body] if isinstance(step, int) else {step: body}
    return body


def filled_in(url: str, operation: dict[str, Any]) -> str:
    """`url` with each path parameter set to a value of its type."""
    for parameter in operation.get("parameters", ()):
        if parameter["in"] == "path":
            value = str(uuid.uuid4()) if parameter["schema"].get("format") == "uuid" else "X1"
            url = url.replace(f"{{{parameter['name']}}}", value)
    return url


@pytest.mark.parametrize(("text", "error"), UNSTORABLE.values(), ids=UNSTORABLE)
@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_text_the_database_cannot_store_is_refused_in_every_body_naming_the_field(
    system, service, text, error
) -> None:
    """Each text field alone in an otherwise empty body: the one error is about it."""
    base_url = system.stack.url(service)
    document = httpx.get(f"{base_url}/openapi.json").json()
    answers, expected = {}, {}

    for url, operations in document["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            for path in dict.fromkeys(text_fields(document, body["schema"]) if body else ()):
                response = httpx.request(
                    method,
                    base_url + filled_in(url, operation),
                    content=json.dumps(holding(path, text)),  # a lone surrogate as `\ud800`
                    headers={"Content-Type": "application/json"},
                )
                errors = response.json()["detail"] if response.status_code == 422 else []
                field = f"{method.upper()} {url}: {'.'.join(map(str, path))}"
                answers[field] = (response.status_code, [(e["loc"], e["msg"]) for e in errors])
                expected[field] = (422, [(["body", *path], error)])

    assert answers, "no request body holds text"
    assert answers == expected
