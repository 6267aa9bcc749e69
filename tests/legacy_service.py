"""Run a service as a deploy that reads only version 1 of order.created; rollout tests only.

    python tests/legacy_service.py <module> serve

It binds, decodes and handles `order.created.v1` alone, as the release before v2 did, and
would dead-letter a v2 as an unknown event. The service's composition root is given a
consumer that accepts those versions (`readable_as`); its queue bindings follow from them.
"""

import functools
import sys

from contracts import Event, OrderCreatedV1, OrderCreatedV2, versions
from servicekit.consumer import EventConsumer
from testkit.services import run_command_line


def readable_before_v2(event_class: type[Event]) -> tuple[type[Event], ...]:
    """What the release before v2 accepted: order.created.v1 alone; every other event as now."""
    if event_class is OrderCreatedV2:
        return (OrderCreatedV1,)
    return versions.readable_as(event_class)


if __name__ == "__main__":
    package, *command = sys.argv[1:]
    v1_only = functools.partial(EventConsumer, readable_as=readable_before_v2)
    run_command_line(package, command, consumer_factory=v1_only)
