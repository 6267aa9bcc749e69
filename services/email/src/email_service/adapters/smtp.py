"""Sending email over real SMTP conversations, behind a circuit breaker."""

from dataclasses import dataclass
from email.charset import QP, Charset
from email.generator import BytesGenerator
from email.message import Message
from email.policy import compat32
from email.utils import formataddr, parseaddr
from io import BytesIO

import aiosmtplib

from servicekit.breaker import CircuitBreaker
from servicekit.consumer import PermanentFailure

from ..config import EmailSettings
from ..domain.emails import OutgoingEmail

UTF8_QUOTED_PRINTABLE = Charset("utf-8")
UTF8_QUOTED_PRINTABLE.body_encoding = QP


@dataclass(frozen=True)
class Envelope:
    """What SMTP carries: the envelope's addresses, and the message as bytes."""

    sender: str
    recipient: str
    data: bytes

    @property
    def mail_options(self) -> list[str]:
        """SMTPUTF8 when an address is not ASCII (RFC 6531)."""
        return [] if (self.sender + self.recipient).isascii() else ["SMTPUTF8"]


@dataclass(frozen=True)
class Mailbox:
    """An address as a header shows it and as the envelope carries it."""

    header: str
    address: str

    @classmethod
    def of(cls, text: str) -> "Mailbox":
        """From "Name <address>" or an address. A non-ASCII display name becomes RFC 2047
        words; an address that is not ASCII stays raw UTF-8 (RFC 6532, sent with SMTPUTF8),
        where RFC 2047 would garble it: compat32 writes a str holding surrogate escapes as
        its bytes."""
        name, address = parseaddr(text)
        if address.isascii():
            return cls(formataddr((name, address), charset="utf-8"), address)
        return cls(text.encode().decode("ascii", "surrogateescape"), address)


def plain_text_envelope(sender: Mailbox, email: OutgoingEmail) -> Envelope:
    """The email as a plain-text MIME message from `sender`.

    Built with the standard library's compat32 `Message`, not `EmailMessage`: the modern
    policy parses every header into an object, and composing and flattening cost four
    times as much (about 0.5 ms of CPU an email, measured). Non-ASCII text in the subject
    becomes RFC 2047 words, and the body is UTF-8 in quoted-printable, so any line length
    goes through.
    """
    recipient = Mailbox.of(email.recipient)
    message = Message()
    message["From"] = sender.header
    message["To"] = recipient.header
    message["Subject"] = email.subject
    message["Message-ID"] = email.message_id
    message["MIME-Version"] = "1.0"
    message.set_payload(email.body, UTF8_QUOTED_PRINTABLE)
    data = BytesIO()
    BytesGenerator(data, mangle_from_=False, policy=compat32).flatten(message)
    return Envelope(sender.address, recipient.address, data.getvalue())


class SmtpSender:
    """Keeps up to `idle_smtp_conversations` SMTP conversations open between emails and reuses
    them: a TCP connection, greeting, EHLO (and STARTTLS, AUTH) per email cost more than
    the email. A conversation that failed is closed, never reused."""

    def __init__(self, settings: EmailSettings, circuit: CircuitBreaker) -> None:
        self._settings = settings
        self._circuit = circuit
        self._idle: list[aiosmtplib.SMTP] = []
        self._sender = Mailbox.of(settings.sender_address)

    async def send(self, email: OutgoingEmail) -> None:
        """Hand the email to the SMTP server; raises if it is not accepted.

        A 5xx answer refuses this email for good (a PermanentFailure, which the circuit does
        not count); anything else is an outage or a hiccup, worth retrying.
        """
        async with self._circuit.guard():
            try:
                await self._deliver(plain_text_envelope(self._sender, email))
            except aiosmtplib.SMTPResponseException as exc:
                if 500 <= exc.code < 600:
                    raise PermanentFailure(f"SMTP refused: {exc.code} {exc.message}") from exc
                raise

    def close(self) -> None:
        """Drop every idle conversation (the process is stopping)."""
        while self._idle:
            self._idle.pop().close()

    async def _deliver(self, envelope: Envelope) -> None:
        if self._idle:
            client = self._idle.pop()
            try:
                await self._send_over(client, envelope)
            except aiosmtplib.SMTPServerDisconnected:
                client.close()  # the server ended the idle conversation: start a new one
            except BaseException:
                client.close()
                raise
            else:
                self._keep(client)
                return
        client = await self._connect()
        try:
            await self._send_over(client, envelope)
        except BaseException:
            client.close()
            raise
        self._keep(client)

    @staticmethod
    async def _send_over(client: aiosmtplib.SMTP, envelope: Envelope) -> None:
        await client.sendmail(
            envelope.sender,
            [envelope.recipient],
            envelope.data,
            mail_options=envelope.mail_options,
        )

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self._settings
        client = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            start_tls=settings.smtp_starttls,
            timeout=settings.smtp_timeout,
        )
        await client.connect()
        return client

    def _keep(self, client: aiosmtplib.SMTP) -> None:
        if len(self._idle) < self._settings.idle_smtp_conversations:
            self._idle.append(client)
        else:
            client.close()
