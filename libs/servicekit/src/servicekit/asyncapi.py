"""Each service's AsyncAPI 3.0.0 document: served at `GET /asyncapi`, committed as
`services/<svc>/asyncapi.json` by `make asyncapi` (deploy/asyncapi_documents.py).

FastStream generates the document from the service's broker; it documents what the broker is
told, and three things are told to it or completed here:
- events leave through the outbox relay, not through FastStream: `document_publishes` gives the
  broker one publisher per published event, for the document alone. Nothing publishes through
  them; starting one only checks that `events` exists (the topology, or provisioning, declares it).
- the consumers decode raw bodies themselves, so FastStream sees no payload on their queues:
  each consuming queue gets the contract of every event version its handlers accept.
- a responder's handler takes a plain dict: its queue gets the request's contract, and its
  operation the reply named by the answer's return annotation.
"""

import inspect
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request, Response
from faststream.rabbit import RabbitBroker
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from contracts import Event

from .consumer import accepted_events
from .topology import EVENTS_EXCHANGE

if TYPE_CHECKING:
    from .service import ServiceRuntime, ServiceSpec

SERVER_URL = "amqp://127.0.0.1:5672/"
"""The server the document names, whatever a deployment connects to: every instance serves
the same document, with no credentials and no test virtual host in it."""

COMPONENTS = "#/components/"
CORRELATION_ID = {"location": "$message.header#/correlation_id"}

asyncapi_router = APIRouter(tags=["asyncapi"])


@asyncapi_router.get("/asyncapi", response_class=Response)
def asyncapi(request: Request) -> Response:
    """What this service consumes, publishes and answers over RabbitMQ (AsyncAPI 3.0.0)."""
    # A plain def: FastAPI runs it in a thread, so the tens of milliseconds FastStream and
    # pydantic take to build it hold up no consumer.
    return Response(render(request.app), media_type="application/json")


def document_publishes(broker: RabbitBroker, events: Sequence[type[Event]]) -> None:
    """Register a publisher for each event, as the outbox relay publishes it."""
    for event in events:
        broker.publisher(
            exchange=EVENTS_EXCHANGE,
            routing_key=event.routing_key(),
            persist=True,
            title=event.routing_key(),
            description=inspect.getdoc(event),
            schema=event,
        )


def asyncapi_document(app: FastAPI) -> dict[str, Any]:
    """The document of an app made by `build_app`, from its broker."""
    spec: ServiceSpec = app.state.spec
    runtime: ServiceRuntime = app.state.runtime
    document: dict[str, Any] = (
        AsyncAPI(
            runtime.broker,
            title=spec.name,
            version=spec.version,
            schema_version="3.0.0",
            description=f"What the {spec.name} service consumes from its queues, publishes to "
            "the `events` exchange (through its outbox) and answers over request-reply.",
        )
        .to_specification()
        .to_jsonable()
    )
    accepted = dict(sorted(accepted_events(spec.handlers).items()))
    for queue in runtime.topology.consuming_queues:
        _set_messages(document, queue.name, accepted)
    for responder in spec.responders:
        request = {responder.request.__name__: responder.request}
        channel = _set_messages(document, responder.queue, request)
        reply = inspect.signature(responder.answer, eval_str=True).return_annotation
        if inspect.isclass(reply) and issubclass(reply, BaseModel):
            _set_reply(document, channel, f"{responder.queue}:reply", reply)
    _drop_unreferenced(document)
    return document


def render(app: FastAPI) -> str:
    """The document as JSON text, identical from one run and one machine to the next."""
    return json.dumps(asyncapi_document(app), indent=2, sort_keys=True) + "\n"


def _set_messages(
    document: dict[str, Any], address: str, models: Mapping[str, type[BaseModel]]
) -> str:
    """Make `models` the messages of the channel at `address` and of its operation; its key."""
    key = next(k for k, c in document["channels"].items() if c.get("address") == address)
    document["channels"][key]["messages"] = _add_messages(document, models)
    _operation(document, key)["messages"] = [
        {"$ref": f"#/channels/{key}/messages/{name}"} for name in models
    ]
    return key


def _set_reply(document: dict[str, Any], channel: str, key: str, reply: type[BaseModel]) -> None:
    """The reply goes to the queue the request names in `reply_to` (RabbitMQ direct reply-to),
    so its channel `key` has no address of its own."""
    name = reply.__name__
    document["channels"][key] = {
        "description": "The queue named by the request's reply_to.",
        "messages": _add_messages(document, {name: reply}),
    }
    _operation(document, channel)["reply"] = {
        "address": {"location": "$message.header#/reply_to"},
        "channel": {"$ref": f"#/channels/{key}"},
        "messages": [{"$ref": f"#/channels/{key}/messages/{name}"}],
    }


def _add_messages(
    document: dict[str, Any], models: Mapping[str, type[BaseModel]]
) -> dict[str, Any]:
    """Add a message per model to the components, as FastStream writes a publisher's; a
    channel's references to them."""
    components = document["components"]
    for name, model in models.items():
        schema = model.model_json_schema(ref_template=COMPONENTS + "schemas/{model}")
        components["schemas"].update(schema.pop("$defs", {}))
        components["schemas"][model.__name__] = schema
        components["messages"][f"{name}:Message"] = {
            "title": f"{name}:Message",
            "correlationId": CORRELATION_ID,
            "payload": {"$ref": f"{COMPONENTS}schemas/{model.__name__}"},
        }
    return {name: {"$ref": f"{COMPONENTS}messages/{name}:Message"} for name in models}


def _operation(document: dict[str, Any], channel: str) -> dict[str, Any]:
    return next(
        operation
        for operation in document["operations"].values()
        if operation["channel"] == {"$ref": f"#/channels/{channel}"}
    )


def _drop_unreferenced(document: dict[str, Any]) -> None:
    """Drop the components nothing refers to, such as the empty payloads FastStream read off
    the consumers' handlers before their messages were replaced."""
    components = document["components"]
    outside = {key: value for key, value in document.items() if key != "components"}
    pending, used = list(_refs(outside)), set()
    while pending:
        ref = pending.pop()
        if ref in used or not ref.startswith(COMPONENTS):
            continue
        used.add(ref)
        section, name = ref.removeprefix(COMPONENTS).split("/", 1)
        pending.extend(_refs(components[section][name]))
    for section in ("messages", "schemas"):
        components[section] = {
            name: value
            for name, value in components[section].items()
            if f"{COMPONENTS}{section}/{name}" in used
        }


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)
