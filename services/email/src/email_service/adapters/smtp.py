"""Sending email over real SMTP conversations, behind a circuit breaker."""

from email.message import EmailMessage

import aiosmtplib

from servicekit.breaker import CircuitBreaker
from servicekit.consumer import PermanentFailure

from ..config import EmailSettings
from ..domain.emails import OutgoingEmail


class SmtpSender:
    """Keeps up to `idle_smtp_conversations` SMTP conversations open between emails and reuses
    them: a TCP connection, greeting, EHLO (and STARTTLS, AUTH) per email cost more than
    the email. A conversation that failed is closed, never reused."""

    def __init__(self, settings: EmailSettings, circuit: CircuitBreaker) -> None:
        self._settings = settings
        self._circuit = circuit
        self._idle: list[aiosmtplib.SMTP] = []

    async def send(self, email: OutgoingEmail) -> None:
        """Hand the email to the SMTP server; raises if it is not accepted.

        A 5xx answer refuses this email for good (a PermanentFailure, which the circuit does
        not count); anything else is an outage or a hiccup, worth retrying.
        """
        async with self._circuit.guard():
            try:
                await self._deliver(self._message(email))
            except aiosmtplib.SMTPResponseException as exc:
                if 500 <= exc.code < 600:
                    raise PermanentFailure(f"SMTP refused: {exc.code} {exc.message}") from exc
                raise

    def close(self) -> None:
        """Drop every idle conversation (the process is stopping)."""
        while self._idle:
            self._idle.pop().close()

    async def _deliver(self, message: EmailMessage) -> None:
        if self._idle:
            client = self._idle.pop()
            try:
                await client.send_message(message)
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
            await client.send_message(message)
        except BaseException:
            client.close()
            raise
        self._keep(client)

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

    def _message(self, email: OutgoingEmail) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._settings.sender_address
        message["To"] = email.recipient
        message["Subject"] = email.subject
        message["Message-ID"] = email.message_id
        message.set_content(email.body)
        return message
