"""Live events: the hub hands each event to the listeners of its order, never waits on a slow
one, and a process's own queue on the real broker feeds it."""

import asyncio
import logging
import uuid

import aio_pika
import pytest
from aiormq.exceptions import PublishError
from faststream.rabbit import RabbitBroker

from contracts import OrderCancelledV1, OrderConfirmedV1, OrderShippedV1
from servicekit.live import FellBehind, LiveHub, LiveUnavailable, subscribe_live
from servicekit.topology import declare_events_exchange
from testkit.broker import publish_event, publish_raw
from testkit.polling import eventually


def confirmed(order_id: uuid.UUID) -> OrderConfirmedV1:
    return OrderConfirmedV1(order_id=order_id, correlation_id=uuid.uuid4(), producer="orders")


def shipped(order_id: uuid.UUID) -> OrderShippedV1:
    return OrderShippedV1(
        order_id=order_id,
        shipment_id=uuid.uuid4(),
        tracking_number="TRK-1",
        correlation_id=uuid.uuid4(),
        producer="orders",
    )


def cancelled(order_id: uuid.UUID) -> OrderCancelledV1:
    return OrderCancelledV1(
        order_id=order_id,
        previous_status="confirmed",
        reason="changed my mind",
        correlation_id=uuid.uuid4(),
        producer="orders",
    )


def drain(queue: asyncio.Queue) -> list:
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


async def test_a_listener_gets_the_events_of_its_order_in_order_and_no_others() -> None:
    hub = LiveHub()
    mine, other = uuid.uuid4(), uuid.uuid4()
    events = [confirmed(mine), confirmed(other), shipped(mine)]
    async with hub.listen(mine) as queue:
        for event in events:
            hub.deliver(event)
        assert drain(queue) == [events[0], events[2]]


async def test_a_listener_of_every_order_gets_every_event_once() -> None:
    hub = LiveHub()
    order = uuid.uuid4()
    async with hub.listen() as everything, hub.listen(order) as one:
        hub.deliver(event := confirmed(order))
        assert drain(everything) == [event]
        assert drain(one) == [event]


async def test_a_listener_gets_nothing_delivered_before_or_after_its_block() -> None:
    hub = LiveHub()
    order = uuid.uuid4()
    hub.deliver(confirmed(order))
    async with hub.listen(order) as queue:
        assert hub.listeners == 1
    hub.deliver(shipped(order))
    assert drain(queue) == []
    assert hub.listeners == 0


async def test_a_listener_that_falls_behind_is_dropped_and_told_while_others_go_on(
    caplog,
) -> None:
    hub = LiveHub(backlog=2)
    order = uuid.uuid4()
    async with hub.listen(order) as slow, hub.listen(order) as keeping_up:
        with caplog.at_level(logging.WARNING, logger="servicekit.live"):
            for _ in range(3):
                hub.deliver(confirmed(order))
                await keeping_up.get()
        with pytest.raises(FellBehind):
            await asyncio.wait_for(slow.get(), timeout=1)
        assert hub.listeners == 1
        hub.deliver(event := shipped(order))
        assert await asyncio.wait_for(keeping_up.get(), timeout=1) == event
    assert "dropped" in caplog.text


async def test_a_waiting_listener_wakes_for_its_event() -> None:
    hub = LiveHub()
    order = uuid.uuid4()
    async with hub.listen(order) as queue:
        waiting = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        hub.deliver(event := confirmed(order))
        assert await asyncio.wait_for(waiting, timeout=1) == event


UNBIND_AFTER = 0.5


@pytest.fixture
async def live_broker(rabbitmq):
    """A broker, as the services build theirs, consuming order.confirmed and order.shipped into
    a hub on its own live queue."""
    connection = await aio_pika.connect(rabbitmq.url)
    async with connection:
        await declare_events_exchange(await connection.channel())
    hub = LiveHub()
    broker = RabbitBroker(rabbitmq.url, apply_types=False)
    binding = subscribe_live(
        broker,
        hub,
        owner="probe",
        routing_keys=[OrderConfirmedV1.routing_key(), OrderShippedV1.routing_key()],
        unbind_after=UNBIND_AFTER,
    )
    await broker.start()
    try:
        yield broker, hub, binding
    finally:
        await broker.stop()


def live_queues(rabbitmq) -> dict[str, dict[str, int]]:
    return {
        name: counts
        for name, counts in rabbitmq.queue_counts().items()
        if name.startswith("probe.live.")
    }


@pytest.mark.integration
async def test_events_published_on_the_broker_reach_the_listeners_skipping_the_undecodable(
    live_broker, rabbitmq, caplog
) -> None:
    _, hub, _ = live_broker
    order = uuid.uuid4()
    caplog.set_level(logging.DEBUG, logger="servicekit.live")
    async with hub.listen(order) as queue:
        await publish_raw(rabbitmq.url, OrderConfirmedV1.routing_key(), b"{not json")
        await publish_event(rabbitmq.url, first := confirmed(order))
        await publish_event(rabbitmq.url, confirmed(uuid.uuid4()))  # another order's
        with pytest.raises(PublishError, match="NO_ROUTE"):  # bound under no other key
            await publish_event(rabbitmq.url, cancelled(order))
        await publish_event(rabbitmq.url, last := shipped(order))
        received = [await asyncio.wait_for(queue.get(), timeout=10) for _ in range(2)]
        assert received == [first, last]
        assert "skipped: malformed JSON" in caplog.text
    assert queue.empty()


@pytest.mark.integration
async def test_the_live_queue_is_the_process_s_own_and_goes_with_it(live_broker, rabbitmq) -> None:
    broker, _, _ = live_broker
    [(name, counts)] = (await eventually(lambda: live_queues(rabbitmq), timeout=10)).items()
    assert len(name.removeprefix("probe.live.")) == 16
    assert counts["consumers"] == 1
    assert counts["messages_ready"] == counts["messages_unacknowledged"] == 0
    await broker.stop()
    await eventually(lambda: not live_queues(rabbitmq), timeout=10)


async def routed(rabbitmq, event) -> bool:
    """Whether the broker routes `event` to any queue (the live queue alone is bound to
    these keys in this virtual host)."""
    try:
        await publish_event(rabbitmq.url, event)
    except PublishError as exc:
        assert "NO_ROUTE" in str(exc)
        return False
    return True


@pytest.mark.integration
async def test_the_live_queue_is_bound_only_while_someone_listens_and_a_while_after(
    live_broker, rabbitmq
) -> None:
    _, hub, binding = live_broker
    order = uuid.uuid4()
    assert not await routed(rabbitmq, confirmed(order))  # no listener yet: no copy sent

    async with hub.listen(order) as first:
        assert binding.bound
        assert await routed(rabbitmq, event := confirmed(order))
        assert await asyncio.wait_for(first.get(), timeout=10) == event
    assert binding.bound  # for UNBIND_AFTER seconds more
    async with hub.listen(order) as second:  # a reconnect within them: still bound
        assert await routed(rabbitmq, event := shipped(order))
        assert await asyncio.wait_for(second.get(), timeout=10) == event

    await eventually(lambda: not binding.bound, timeout=10)
    assert not await routed(rabbitmq, confirmed(order))
    async with hub.listen(order) as third:  # bound again for the next listener
        assert await routed(rabbitmq, event := confirmed(order))
        assert await asyncio.wait_for(third.get(), timeout=10) == event


@pytest.mark.integration
async def test_listening_while_the_broker_is_unreachable_fails_and_listens_again_later(
    live_broker, rabbitmq
) -> None:
    broker, hub, binding = live_broker
    await broker.stop()
    with pytest.raises(LiveUnavailable):
        async with hub.listen(uuid.uuid4()):
            pass
    assert hub.listeners == 0 and not binding.bound
