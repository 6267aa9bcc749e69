"""`orderctl dlq` against the real RabbitMQ: dead letters are put where the consumer puts them."""

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime

import aio_pika
import pytest
from typer.testing import CliRunner

from orderctl.cli import app
from servicekit import failures
from servicekit.topology import (
    ServiceTopology,
    dead_letter_exchange_name,
    dead_letter_queue_name,
    retry_queue_name,
    wait_queue_name,
    work_queue_name,
)
from testkit.broker import RawText, peek_queue, publish_raw
from testkit.events import order_created
from testkit.polling import eventually

pytestmark = pytest.mark.integration

SERVICE = "orders"
ROUTING_KEY = "order.created.v1"
TOPOLOGY = ServiceTopology(SERVICE, (ROUTING_KEY,), retry_delays=(0.2,))
DLQ = dead_letter_queue_name(SERVICE)
WORK = work_queue_name(SERVICE)
RETRY = retry_queue_name(SERVICE, 1)
WAIT = wait_queue_name(SERVICE, 1, TOPOLOGY.retry_delays[0])


@pytest.fixture
async def url(rabbitmq) -> str:
    """The test vhost with the orders topology declared and every queue empty."""
    connection = await aio_pika.connect(rabbitmq.url)
    async with connection:
        channel = await connection.channel()
        await TOPOLOGY.declare(channel)
        for queue in TOPOLOGY.all_queues:
            await (await channel.get_queue(queue.name)).purge()
    return rabbitmq.url


async def orderctl(*args: str, answer: str | None = None):
    """Run the CLI as a shell would; in a thread, since it runs its own event loop."""
    runner = CliRunner(env={"COLUMNS": "250"})
    return await asyncio.to_thread(runner.invoke, app, list(args), input=answer)


def event_body() -> tuple[str, bytes]:
    event = order_created(version=1)
    return str(event.event_id), event.model_dump_json().encode()


async def dead_letter(
    url: str,
    body: bytes,
    *,
    message_id: str,
    reason: str,
    routing_key: str = ROUTING_KEY,
    exception: str = "PermanentFailure",
    headers: dict | None = None,
    without: tuple[str, ...] = (),
) -> None:
    """Publish to the service's dead-letter exchange with failure headers, as its consumer
    does; `without` leaves some of them out, as an older consumer might."""
    now = datetime.now(UTC).isoformat()
    failure_headers = {
        failures.FAILURE_SERVICE: SERVICE,
        failures.FAILURE_REASON: reason,
        failures.FAILURE_EXCEPTION: exception,
        failures.FAILURE_ATTEMPTS: 1,
        failures.FIRST_FAILURE_AT: now,
        failures.LAST_FAILURE_AT: now,
        failures.ORIGINAL_EXCHANGE: "events",
        failures.ORIGINAL_ROUTING_KEY: routing_key,
    }
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(on_return_raises=True)
        exchange = await channel.get_exchange(dead_letter_exchange_name(SERVICE))
        await exchange.publish(
            aio_pika.Message(
                body,
                message_id=message_id,
                correlation_id=str(uuid.uuid4()),
                content_type="application/json",
                app_id=SERVICE,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={
                    name: value
                    for name, value in {**failure_headers, **(headers or {})}.items()
                    if name not in without
                },
            ),
            routing_key=routing_key,
        )


async def dead_letter_after_retry(
    url: str, message_id: str, body: bytes, reason: str, without: tuple[str, ...] = ()
) -> None:
    """Fail a message once on the work queue and once on the retry queue, the way the
    consumer does, so the broker writes a genuine `x-death` history before it is dead-lettered."""
    await publish_raw(url, ROUTING_KEY, body, message_id=message_id)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        work = await channel.get_queue(WORK)
        await (await eventually(lambda: work.get(fail=False))).reject()
        retry = await channel.get_queue(RETRY)
        retried = await eventually(lambda: retry.get(fail=False))
        await dead_letter(
            url,
            retried.body,
            message_id=message_id,
            reason=reason,
            headers=retried.headers,
            without=without,
        )
        await retried.ack()


async def dlq_ids(url: str) -> list[str]:
    return sorted(message.message_id for message in await peek_queue(url, DLQ))


def has_line(output: str, *parts: str) -> bool:
    return any(all(part in line for part in parts) for line in output.splitlines())


async def test_list_shows_dead_letters_retries_and_work_per_service(url) -> None:
    for _ in range(2):
        message_id, body = event_body()
        await dead_letter(url, body, message_id=message_id, reason="boom")
    await publish_raw(url, RETRY, b"{}", exchange="")
    await publish_raw(url, ROUTING_KEY, b"{}")

    result = await orderctl("dlq", "list", "--url", url)

    assert result.exit_code == 0, result.output
    dead, in_retry, work, tiers = re.search(
        rf"{SERVICE}\W+(\d+)\W+(\d+)\W+(\d+)\W+(\d+)", result.stdout
    ).groups()
    assert (dead, in_retry, work, tiers) == ("2", "1", "1", "1")
    assert "not on this broker: email, inventory, shipping" in result.stdout


async def test_list_of_a_service_not_on_the_broker_fails(url) -> None:
    result = await orderctl("dlq", "list", "--service", "email", "--url", url)

    assert result.exit_code == 2
    assert "unknown service 'email': no queue email.dlq on this broker" in result.stderr


async def test_show_groups_by_reason_and_lists_each_message(url) -> None:
    malformed = [str(uuid.uuid4()) for _ in range(2)]
    for message_id in malformed:
        await dead_letter(
            url, b"not json", message_id=message_id, reason="malformed JSON: Expecting value"
        )
    violating, body = event_body()
    await dead_letter(
        url,
        body,
        message_id=violating,
        reason="violates contract order.created.v1: total: [must be positive]",
        routing_key="order.created.v9",
        exception="ValidationError",
    )

    result = await orderctl("dlq", "show", SERVICE, "--url", url)

    assert result.exit_code == 0, result.output
    assert "3 messages in orders.dlq, by failure reason" in result.stdout
    assert has_line(result.stdout, "malformed JSON: Expecting value", " 2 ", ROUTING_KEY)
    assert has_line(result.stdout, "total: [must be positive]", " 1 ", "order.created.v9")
    assert has_line(result.stdout, "ValidationError")
    for message_id in [*malformed, violating]:
        assert has_line(result.stdout, message_id)
    assert await dlq_ids(url) == sorted([*malformed, violating]), "show must keep every message"


async def test_show_filters_by_reason(url) -> None:
    kept, body = event_body()
    await dead_letter(url, body, message_id=kept, reason="stock service said no")
    other, body = event_body()
    await dead_letter(url, body, message_id=other, reason="malformed JSON")

    result = await orderctl("dlq", "show", SERVICE, "--reason", "STOCK", "--url", url)

    assert result.exit_code == 0, result.output
    assert kept in result.stdout
    assert other not in result.stdout


async def test_show_one_message_has_headers_body_and_history(url) -> None:
    message_id, body = event_body()
    await dead_letter_after_retry(url, message_id, body, reason="database is on fire")

    result = await orderctl("dlq", "show", SERVICE, message_id, "--url", url)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert has_line(out, failures.FAILURE_REASON, "database is on fire")
    assert has_line(out, "Original route", "'events'", ROUTING_KEY)
    order_id = json.loads(body)["order_id"]
    assert f'"order_id": "{order_id}"' in out, "the body is pretty-printed JSON"
    assert has_line(out, "consumer", "PermanentFailure: database is on fire")
    assert has_line(out, "broker", WORK, "rejected", " 1 ")
    assert has_line(out, "broker", WAIT, "expired", " 1 ")


async def test_show_one_malformed_message_shows_its_raw_body(url) -> None:
    message_id = str(uuid.uuid4())
    await dead_letter(url, b"\xffnot {json", message_id=message_id, reason="malformed JSON")

    result = await orderctl("dlq", "show", SERVICE, message_id, "--url", url)

    assert result.exit_code == 0, result.output
    assert "Body: not JSON (10 bytes)" in result.stdout
    assert "\\xffnot {json" in result.stdout


async def test_show_of_a_missing_message_id_fails(url) -> None:
    message_id, body = event_body()
    await dead_letter(url, body, message_id=message_id, reason="boom")
    missing = str(uuid.uuid4())

    result = await orderctl("dlq", "show", SERVICE, missing, "--url", url)

    assert result.exit_code == 1
    assert f"no message {missing} in orders.dlq" in result.stderr


async def test_replay_one_by_id_puts_it_back_on_the_work_queue_only(url) -> None:
    replayed, body = event_body()
    await dead_letter_after_retry(url, replayed, body, reason="database is on fire")
    others = [event_body() for _ in range(2)]
    for message_id, other_body in others:
        await dead_letter(url, other_body, message_id=message_id, reason="boom")

    result = await orderctl("dlq", "replay", SERVICE, replayed, "--yes", "--url", url)

    assert result.exit_code == 0, result.output
    assert "replayed 1 message to orders.work" in result.stdout
    [message] = await eventually(lambda: peek_queue(url, WORK))
    assert (message.message_id, message.body, message.persistent) == (replayed, body, True)
    headers = message.headers
    assert headers[failures.REPLAY_COUNT] == 1
    assert datetime.fromisoformat(headers[failures.REPLAYED_AT]) <= datetime.now(UTC)
    assert (headers[failures.ORIGINAL_EXCHANGE], headers[failures.ORIGINAL_ROUTING_KEY]) == (
        "events",
        ROUTING_KEY,
    )
    assert not set(headers) & {*failures.BROKER_HISTORY, failures.FIRST_FAILURE_AT}
    assert not [name for name in headers if name.startswith("x-failure-")]
    assert await dlq_ids(url) == sorted(message_id for message_id, _ in others)


async def test_replay_fills_in_the_original_route_from_the_broker_history(url) -> None:
    message_id, body = event_body()
    route = (failures.ORIGINAL_EXCHANGE, failures.ORIGINAL_ROUTING_KEY)
    await dead_letter_after_retry(url, message_id, body, reason="boom", without=route)

    result = await orderctl("dlq", "replay", SERVICE, "--all", "--yes", "--url", url)

    assert result.exit_code == 0, result.output
    [message] = await eventually(lambda: peek_queue(url, WORK))
    assert [message.headers[name] for name in route] == ["events", ROUTING_KEY]


async def test_replay_that_the_broker_cannot_route_stays_in_the_dlq(url) -> None:
    message_id, body = event_body()
    await dead_letter(url, body, message_id=message_id, reason="boom")
    connection = await aio_pika.connect(url)
    async with connection:
        await (await connection.channel()).queue_delete(WORK)

    result = await orderctl("dlq", "replay", SERVICE, message_id, "--yes", "--url", url)

    assert result.exit_code == 1
    assert has_line(result.stdout, "not replayed, left in the DLQ", message_id)
    assert "replayed 0 messages" in result.stdout
    assert await dlq_ids(url) == [message_id]


async def test_replay_by_reason_asks_first_and_counts_replays(url) -> None:
    matching = [event_body() for _ in range(2)]
    for message_id, body in matching:
        await dead_letter(
            url,
            body,
            message_id=message_id,
            reason="inventory timed out",
            headers={failures.REPLAY_COUNT: 1},
        )
    kept, body = event_body()
    await dead_letter(url, body, message_id=kept, reason="malformed JSON")

    result = await orderctl(
        "dlq", "replay", SERVICE, "--reason", "timed out", "--url", url, answer="y\n"
    )

    assert result.exit_code == 0, result.output
    assert "2 messages to replay to orders.work" in result.stdout
    assert "Replay 2 messages to orders.work?" in result.stdout
    work = await eventually(lambda: peek_queue(url, WORK))
    assert sorted(m.message_id for m in work) == sorted(message_id for message_id, _ in matching)
    assert {m.headers[failures.REPLAY_COUNT] for m in work} == {2}
    assert await dlq_ids(url) == [kept]


async def test_replay_declined_leaves_the_dlq_as_it_was(url) -> None:
    message_id, body = event_body()
    await dead_letter(url, body, message_id=message_id, reason="boom")

    result = await orderctl("dlq", "replay", SERVICE, "--all", "--url", url, answer="n\n")

    assert result.exit_code == 1
    assert "nothing done" in result.stdout
    assert await dlq_ids(url) == [message_id]
    assert await peek_queue(url, WORK) == []


async def test_replay_needs_to_be_told_what(url) -> None:
    result = await orderctl("dlq", "replay", SERVICE, "--url", url)

    assert result.exit_code == 2
    assert "say what to replay" in result.output


async def test_purge_by_routing_key_then_all(url) -> None:
    old_version = [str(uuid.uuid4()) for _ in range(2)]
    for message_id in old_version:
        await dead_letter(
            url,
            b"{}",
            message_id=message_id,
            reason="unknown event",
            routing_key="order.created.v0",
        )
    kept, body = event_body()
    await dead_letter(url, body, message_id=kept, reason="boom")

    by_key = await orderctl(
        "dlq", "purge", SERVICE, "--routing-key", "order.created.v0", "--yes", "--url", url
    )

    assert by_key.exit_code == 0, by_key.output
    assert "deleted 2 messages from orders.dlq" in by_key.stdout
    assert await dlq_ids(url) == [kept]

    everything = await orderctl("dlq", "purge", SERVICE, "--yes", "--url", url)

    assert everything.exit_code == 0, everything.output
    assert "deleted 1 message from orders.dlq" in everything.stdout
    assert await dlq_ids(url) == []
    assert await peek_queue(url, WORK) == [], "purged messages are not replayed"


async def test_a_dead_letter_that_is_not_utf8_where_amqp_requires_it_is_shown_and_purged(
    url,
) -> None:
    message_id, body = event_body()
    await publish_raw(
        url, "", body, message_id=message_id, exchange=dead_letter_exchange_name(SERVICE),
        content_type=RawText(b"\xff\xfe"), headers={RawText(b"x-\xff"): "forged"},
    )  # fmt: skip

    shown = await orderctl("dlq", "show", SERVICE, "--url", url)
    purged = await orderctl("dlq", "purge", SERVICE, "--yes", "--url", url)

    assert shown.exit_code == 0, shown.output
    assert message_id in shown.stdout
    assert purged.exit_code == 0, purged.output
    assert "deleted 1 message from orders.dlq" in purged.stdout
    assert await dlq_ids(url) == []


@pytest.mark.parametrize("command", [["show"], ["replay", "--all"], ["purge", "--yes"]])
async def test_an_empty_dlq_says_so(url, command) -> None:
    result = await orderctl("dlq", command[0], SERVICE, *command[1:], "--url", url)

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "orders.dlq is empty"


async def test_unknown_service_fails_clearly(url) -> None:
    result = await orderctl("dlq", "show", "billing", "--url", url)

    assert result.exit_code == 2
    assert result.stderr.strip() == "unknown service 'billing': no queue billing.dlq on this broker"


@pytest.mark.parametrize(
    ("bad_url", "reason"),
    [
        ("amqp://guest:s3cret@127.0.0.1:1/orders", "Connect call failed"),
        ("amqp://guest:s3cret@127.0.0.1:5672/", "ACCESS_REFUSED"),
        ("amqp://guest:guest@127.0.0.1:5672/no-such-vhost", "virtual host 'no-such-vhost'"),
    ],
)
async def test_unreachable_broker_fails_in_one_line_without_the_password(bad_url, reason) -> None:
    result = await orderctl("dlq", "list", "--url", bad_url)

    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:")
    assert reason in line
    assert "s3cret" not in result.output
    assert "Traceback" not in result.output
