"""What each email says, its identity across attempts, and when it is no longer worth sending."""

import uuid

import pytest

from contracts import RejectedLineV1
from contracts.versions import upcast
from email_service.domain.emails import (
    CustomerOrder,
    EmailKind,
    is_superseded,
    order_cancellation,
    order_confirmation,
    order_rejection,
    shipment_dispatched,
)
from testkit.events import order_created

LINES = (("SKU-1", "Analytical engine", 2), ("SKU-2", "Punched card", 1))


@pytest.fixture
def order() -> CustomerOrder:
    """Grace Hopper's order, shipped to Ada Lovelace in London."""
    event = order_created(LINES, customer_name="Grace Hopper", customer_email="grace@example.com")
    return CustomerOrder.from_event(event)


def test_every_attempt_at_an_email_has_the_same_message_id(order) -> None:
    cause, other_cause = uuid.uuid4(), uuid.uuid4()
    first, again = order_confirmation(order, cause), order_confirmation(order, cause)
    other = order_confirmation(order, other_cause)

    assert first.message_id == again.message_id
    assert first.message_id != other.message_id
    assert first.message_id == f"<{first.email_id}@orderflow>"


def test_emails_of_different_kinds_from_one_cause_have_different_ids(order) -> None:
    cause = uuid.uuid4()
    ids = {
        order_confirmation(order, cause).email_id,
        order_cancellation(order, "changed my mind", cause).email_id,
        shipment_dispatched(order, "OF0123456789AB", cause).email_id,
    }
    assert len(ids) == 3


def test_an_order_remembers_customer_lines_total_and_address() -> None:
    event = order_created(LINES, customer_name="Ada", customer_email="ada@example.com")
    order = CustomerOrder.from_event(event)

    assert (order.order_id, order.customer_name, order.customer_email) == (
        event.order_id,
        "Ada",
        "ada@example.com",
    )
    assert order.lines == [
        {"sku": "SKU-1", "name": "Analytical engine", "quantity": 2, "unit_price": "4.50"},
        {"sku": "SKU-2", "name": "Punched card", "quantity": 1, "unit_price": "4.50"},
    ]
    assert (str(order.total), order.currency) == ("13.50", "EUR")
    assert order.shipping_address["city"] == "London"


def test_an_order_from_a_v1_event_names_products_by_sku_and_the_customer_by_addressee() -> None:
    order = CustomerOrder.from_event(upcast(order_created(LINES, version=1)))
    assert order.customer_name == "Ada Lovelace"
    assert order.product_name("SKU-1") == "SKU-1"


def test_a_product_name_falls_back_to_the_sku(order) -> None:
    assert order.product_name("SKU-2") == "Punched card"
    assert order.product_name("SKU-404") == "SKU-404"


def test_a_confirmation_greets_the_customer_and_lists_the_lines_and_the_address(order) -> None:
    email = order_confirmation(order, uuid.uuid4())

    assert (email.recipient, email.kind, email.order_id) == (
        "grace@example.com",
        EmailKind.ORDER_CONFIRMATION,
        order.order_id,
    )
    assert str(order.order_id) in email.subject
    assert email.body.startswith("Hello Grace Hopper,")
    assert "2 x Analytical engine (SKU-1) at 4.50 EUR" in email.body
    assert "1 x Punched card (SKU-2) at 4.50 EUR" in email.body
    assert "Total: 13.50 EUR" in email.body
    assert "12 St James's Square" in email.body
    assert "SW1Y 4JH London" in email.body


def test_a_rejection_names_each_short_item_and_why(order) -> None:
    short = [
        RejectedLineV1(sku="SKU-1", requested=2, available=1, reason="insufficient_stock"),
        RejectedLineV1(sku="SKU-2", requested=1, available=0, reason="unknown_sku"),
    ]
    email = order_rejection(order, short, uuid.uuid4())

    assert email.kind == EmailKind.ORDER_REJECTION
    assert str(order.order_id) in email.subject
    assert "Analytical engine (SKU-1): you asked for 2, we have 1" in email.body
    assert "Punched card (SKU-2): you asked for 1, we do not sell it" in email.body


def test_a_dispatch_notice_gives_the_tracking_number(order) -> None:
    email = shipment_dispatched(order, "OF0123456789AB", uuid.uuid4())

    assert email.kind == EmailKind.SHIPMENT_DISPATCHED
    assert str(order.order_id) in email.subject
    assert "Tracking number: OF0123456789AB" in email.body


def test_a_cancellation_gives_the_reason(order) -> None:
    email = order_cancellation(order, "changed my mind", uuid.uuid4())

    assert email.kind == EmailKind.ORDER_CANCELLATION
    assert str(order.order_id) in email.subject
    assert "is cancelled (changed my mind)" in email.body


@pytest.mark.parametrize(
    ("kind", "already_sent", "superseded"),
    [
        (EmailKind.ORDER_CONFIRMATION, [], False),
        (EmailKind.ORDER_CONFIRMATION, ["order_cancellation"], True),
        (EmailKind.ORDER_CONFIRMATION, ["shipment_dispatched"], True),
        (EmailKind.ORDER_CONFIRMATION, ["order_rejection"], False),
        (EmailKind.ORDER_CANCELLATION, ["order_confirmation"], False),
        (EmailKind.SHIPMENT_DISPATCHED, ["order_confirmation", "order_cancellation"], False),
        (EmailKind.ORDER_REJECTION, ["order_cancellation"], False),
    ],
)
def test_only_a_confirmation_overtaken_by_a_cancellation_or_dispatch_is_superseded(
    kind, already_sent, superseded
) -> None:
    assert is_superseded(kind, already_sent) is superseded
