"""Run a service as a deploy that reads only version 1 of order.created; rollout tests only.

    python tests/legacy_service.py <module> serve

It binds, decodes and handles `order.created.v1` alone, as the release before v2 did, and
would dead-letter a v2 as an unknown event.
"""

import runpy
import sys

from contracts import OrderCreatedV1, OrderCreatedV2, versions

_readable_as = versions.readable_as


def readable_before_v2(event_class):
    if event_class is OrderCreatedV2:
        return (OrderCreatedV1,)
    return _readable_as(event_class)


if __name__ == "__main__":
    versions.readable_as = readable_before_v2
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
