"""What the email service hands to a real SMTP server (in-process aiosmtpd): a plain-text
message that reads back as composed, whatever its text, over one reused conversation."""

import uuid

import pytest

from contracts.audit import EmailKind
from email_service.adapters.smtp import SmtpSender
from email_service.config import EmailSettings
from email_service.domain.emails import OutgoingEmail
from servicekit.breaker import CircuitBreaker


def outgoing(recipient: str, subject: str, body: str) -> OutgoingEmail:
    """An email whose subject ends with its order id, to find it among the sink's."""
    order_id = uuid.uuid4()
    return OutgoingEmail(
        email_id=uuid.uuid4(),
        order_id=order_id,
        recipient=recipient,
        subject=f"{subject} {order_id}",
        body=body,
        kind=EmailKind.ORDER_CONFIRMATION,
    )


def received(smtp_sink, email: OutgoingEmail):
    """The message the sink accepted for `email`, and its envelope recipients."""
    handler = smtp_sink.handler
    [index] = [i for i, m in enumerate(handler.messages) if str(email.order_id) in m["Subject"]]
    return handler.messages[index], handler.recipients[index]


@pytest.fixture
async def sender(smtp_sink):
    settings = EmailSettings(
        smtp_host=smtp_sink.host, smtp_port=smtp_sink.port, sender_address="Shöp <shop@example.org>"
    )
    circuit = CircuitBreaker("smtp", failure_threshold=5, reset_timeout=30)
    smtp = SmtpSender(settings, circuit)
    yield smtp
    smtp.close()


BODIES = {
    "ascii": "Hello Ada,\n\nyour order is confirmed.\nTotal: 4.50 EUR = 2 x 2.25\n",
    "not ascii": "Hello Zoë Ñúñez,\n\n  2 x Größenmaß (SKU-1) at 4.50 €\n\n日本語の行\n",
    "a line of 2000 characters": "Hello,\n\n" + "x" * 2000 + "\n",
}


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
async def test_an_email_reads_back_as_composed(sender, smtp_sink, body) -> None:
    email = outgoing("ada@example.com", "Your order is confirmed: Größe ✓", body)
    await sender.send(email)
    message, recipients = received(smtp_sink, email)
    assert message.get_content().replace("\r\n", "\n") == body  # SMTP's lines end in CRLF
    assert message["Subject"] == email.subject
    assert message["To"] == "ada@example.com"
    assert message["From"] == "Shöp <shop@example.org>"
    assert message["Message-ID"] == email.message_id
    assert message.get_content_type() == "text/plain"
    assert recipients == ["ada@example.com"]


async def test_an_address_that_is_not_ascii_is_delivered_to_and_written_as_it_is(
    sender, smtp_sink
) -> None:
    await sender.send(email := outgoing("zoë@exämple.com", "Your order", "Hello\n"))
    message, recipients = received(smtp_sink, email)
    assert recipients == ["zoë@exämple.com"]
    assert message["To"] == "zoë@exämple.com"


async def test_emails_in_a_row_go_over_one_conversation(sender, smtp_sink) -> None:
    emails = [outgoing("ada@example.com", f"Email {number}", "Hello\n") for number in range(3)]
    for email in emails:
        await sender.send(email)
    peers = {smtp_sink.handler.connections_for(str(email.order_id)).pop() for email in emails}
    assert len(peers) == 1
