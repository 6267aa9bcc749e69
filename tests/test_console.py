"""The operator console (`orderctl console`) in a real browser, headless Chromium, against
the system as `make run` starts it: an order followed live, dead letters replayed and purged
from the page, the queues, and the operator sign-in the console asks for in production."""

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import Page, async_playwright, expect

from devstack import CONSOLE, free_ports
from orderctl.audit import url_variable
from servicekit.auth import mint_operator_token
from servicekit.registry import SERVICE_NAMES, SERVICES
from servicekit.topology import DEFAULT_RETRY_DELAYS, wait_queue_name
from testkit.broker import publish_raw
from testkit.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SERVICE_ENV = {"SHIPPING_DISPATCH_DELAY": "3600"}
"""Orders stay confirmed: nothing ships while the module runs."""
CHROMIUM = "/usr/bin/chromium"
SEEN_MS = 20_000
"""How long the browser may take to show what the test waits for."""
CONSUMERS_OF_ORDER_CREATED = ("email", "inventory", "shipping")


@pytest.fixture(scope="module")
def console(system) -> str:
    """The console as `make run` starts it, on this module's stack; stopped with it."""
    system.stack.start_console()
    system.stack.wait_ready(timeout=30, services=(CONSOLE,))
    return system.stack.url(CONSOLE)


@pytest_asyncio.fixture(loop_scope="module")
async def page() -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def test_an_order_page_shows_the_order_confirmed_without_a_reload(system, console, page):
    await system.inventory.put("/stock/SKU-CONSOLE-1", json={"available": 10})
    assert system.stack.stop_service("inventory") == 0  # the order waits for it, pending
    order_id = await system.place(("SKU-CONSOLE-1", 2))

    await page.goto(f"{console}/orders/{order_id}")
    status = page.locator("#order-status")
    await expect(status).to_have_text("pending")
    await expect(page.locator("#reservation")).to_contain_text("cannot reach the inventory service")
    await page.evaluate("window.sameDocument = true")

    system.stack.start_service("inventory")
    await asyncio.to_thread(system.stack.wait_ready, 60, ("inventory",))
    await expect(status).to_have_text("confirmed", timeout=SEEN_MS)
    assert await page.evaluate("window.sameDocument === true"), "the page was reloaded"
    await expect(page.locator("#timeline")).to_contain_text("inventory")
    await expect(page.locator("#reservation")).to_contain_text("reserved")

    async def what_shipping_and_email_did_shown() -> bool:  # after the confirmation, later
        await page.reload()
        await expect(page.locator("#shipments")).to_contain_text("ready", timeout=500)
        await expect(page.locator("#emails")).to_contain_text("order_confirmation", timeout=500)
        return True

    await eventually(what_shipping_and_email_did_shown)


async def test_the_latest_orders_show_a_new_order_and_its_status_as_they_happen(
    system, console, page
):
    await system.inventory.put("/stock/SKU-CONSOLE-2", json={"available": 10})
    await page.goto(console)
    await page.evaluate("window.sameDocument = true")

    order_id = await system.place(("SKU-CONSOLE-2", 1))
    row = page.locator(f'tr[data-order="{order_id}"]')
    await expect(row.locator(".status")).to_have_text("confirmed", timeout=SEEN_MS)
    assert await page.evaluate("window.sameDocument === true"), "the page was reloaded"
    await row.get_by_role("link").click()
    await expect(page.locator("#order-status")).to_have_text("confirmed")


async def test_a_malformed_event_is_shown_replayed_and_purged_from_the_dead_letters_page(
    system, console, page
):
    message_id = str(uuid.uuid4())
    await publish_raw(system.rabbitmq.url, "order.created.v2", b"not json", message_id=message_id)

    def reason(service: str):
        return page.locator(f'section[data-service="{service}"] tr[data-reason^="malformed JSON"]')

    async def dead_lettered_by_every_consumer() -> bool:
        await page.goto(f"{console}/dead-letters")
        for service in CONSUMERS_OF_ORDER_CREATED:
            await expect(reason(service).locator(".group-count")).to_have_text("1", timeout=500)
        return True

    await eventually(dead_lettered_by_every_consumer)
    await expect(page.locator('section[data-service="orders"]')).to_contain_text("Empty")
    await expect(reason("inventory")).to_contain_text("order.created.v2")

    await reason("inventory").get_by_role("link", name=message_id).click()
    await expect(page.locator("#body")).to_have_text("not json")
    await expect(page.locator("#headers")).to_contain_text("x-failure-reason")

    await page.goto(f"{console}/dead-letters")
    await reason("inventory").get_by_role("link", name="Replay…").click()
    await expect(page.get_by_role("heading")).to_contain_text("Replay 1 message of inventory.dlq")
    await page.get_by_role("button", name="Yes, replay 1 message").click()
    await expect(page.get_by_role("status")).to_have_text("replayed 1 message to inventory.work")

    async def failed_again_after_the_replay() -> bool:
        await page.goto(f"{console}/dead-letters")
        await expect(reason("inventory").locator(".replayed")).to_have_text("1", timeout=500)
        return True

    await eventually(failed_again_after_the_replay)
    for service in ("email", "shipping"):  # the replay went to inventory alone
        await expect(reason(service).locator(".group-count")).to_have_text("1")
        await expect(reason(service).locator(".replayed")).to_have_text("0")

    await reason("shipping").get_by_role("link", name="Purge…").click()
    await page.get_by_role("button", name="Yes, purge 1 message").click()
    await expect(page.get_by_role("status")).to_have_text("deleted 1 message from shipping.dlq")
    shipping = page.locator('section[data-service="shipping"]')
    await expect(shipping.locator(".count")).to_have_text("0 messages")
    await expect(shipping).to_contain_text("Empty")
    await expect(reason("email").locator(".group-count")).to_have_text("1")


async def test_the_queues_page_lists_each_service_queues_consumers_and_outbox(
    system, console, page
):
    await page.goto(f"{console}/queues")
    for service in SERVICE_NAMES:
        section = page.locator(f"section#{service}")
        work = section.locator(f'tr[data-queue="{service}.work"]')
        await expect(work.locator("td").nth(2)).not_to_have_text("0")  # its consumers
        await expect(section.locator(f'tr[data-queue="{service}.dlq"]')).to_be_visible()
        first_wait = wait_queue_name(service, 1, DEFAULT_RETRY_DELAYS[0])
        await expect(section.locator(f'tr[data-queue="{first_wait}"]')).to_be_visible()
        await expect(section.locator(f'tr[data-queue="{service}.retry.1"]')).to_be_visible()
        await expect(section.locator(".outbox")).to_contain_text("unpublished")


@pytest.fixture(scope="module")
def operator_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def production_console(system, operator_key, tmp_path_factory) -> Iterator[str]:
    """A second console, as in production: it lets in operators only."""
    public = operator_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (port,) = free_ports(1)
    urls = {url_variable(entry): system.stack.url(entry.name) for entry in SERVICES}
    log = open(tmp_path_factory.mktemp("console") / "console.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "orderctl", "console", "--port", str(port)],
        env={
            **os.environ,
            **urls,
            "RABBITMQ_URL": system.rabbitmq.url,
            "ENVIRONMENT": "production",
            "OPERATOR_TOKEN_PUBLIC_KEY": public.decode(),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(eventually(lambda: _ready(url), timeout=30))
        yield url
    finally:
        process.terminate()
        assert process.wait(30) == 0
        log.close()


async def _ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{url}/health/ready")).status_code == 200
    except httpx.TransportError:
        return False


def _token(key: Ed25519PrivateKey, ttl: timedelta = timedelta(minutes=10)) -> str:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return mint_operator_token(pem.decode(), ttl, "ada")


async def test_in_production_every_page_and_action_asks_for_an_operator_token(
    production_console, operator_key
):
    other_key = Ed25519PrivateKey.generate()
    async with httpx.AsyncClient(base_url=production_console) as client:
        page = await client.get("/dead-letters", headers={"Accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=/dead-letters"
        for request in (
            client.build_request("POST", "/dead-letters/email/purge"),
            client.build_request("GET", "/live"),
            client.build_request("GET", "/queues"),
            client.build_request(
                "GET", "/queues", headers={"Authorization": f"Bearer {_token(other_key)}"}
            ),
        ):
            assert (await client.send(request)).status_code == 401, request
        signed = {"Authorization": f"Bearer {_token(operator_key)}"}
        assert (await client.get("/queues", headers=signed)).status_code == 200
        refused = await client.post("/login", data={"token": _token(other_key)})
        assert refused.status_code == 401
        assert "orderctl_console" not in refused.cookies


async def test_an_operator_signs_in_with_a_token_and_stays_signed_in(
    production_console, operator_key, page
):
    await page.goto(f"{production_console}/queues")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Operator token").fill("not a token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not a valid operator token")

    await page.get_by_label("Operator token").fill(_token(operator_key))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Queues and outboxes")).to_be_visible()
    await page.goto(production_console)
    await expect(page.get_by_role("heading", name="Latest orders")).to_be_visible()
    cookie = next(c for c in await page.context.cookies() if c["name"] == "orderctl_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    await page.get_by_role("button", name="Sign out").click()
    await page.goto(f"{production_console}/dead-letters")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
