"""What each email says, and its identity across attempts."""

from email_service.domain.messages import order_confirmation
from servicekit.testing import order_created_event


def test_every_attempt_at_a_confirmation_has_the_same_message_id() -> None:
    order = order_created_event([("SKU-1", 2)])
    first, again = order_confirmation(order), order_confirmation(order)
    other = order_confirmation(order_created_event([("SKU-1", 2)]))

    assert first.message_id == again.message_id
    assert first.message_id != other.message_id


def test_a_confirmation_lists_the_lines_and_the_address() -> None:
    order = order_created_event([("SKU-1", 2), ("SKU-2", 1)], customer_email="grace@example.com")
    email = order_confirmation(order)

    assert (email.recipient, email.kind, email.order_id) == (
        "grace@example.com",
        "order_confirmation",
        order.order_id,
    )
    assert "2 x SKU-1 at 4.50 EUR" in email.body
    assert "1 x SKU-2 at 4.50 EUR" in email.body
    assert "12 St James's Square" in email.body
