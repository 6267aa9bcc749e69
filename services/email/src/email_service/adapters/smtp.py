"""Sending email over a real SMTP conversation, behind a circuit breaker."""

from email.message import EmailMessage

import aiosmtplib

from servicekit.breaker import CircuitBreaker
from servicekit.consumer import PermanentFailure

from ..config import EmailSettings
from ..domain.emails import OutgoingEmail


class SmtpSender:
    def __init__(self, settings: EmailSettings, circuit: CircuitBreaker) -> None:
        self._settings = settings
        self._circuit = circuit

    async def send(self, email: OutgoingEmail) -> None:
        """Hand the email to the SMTP server; raises if it is not accepted.

        A 5xx answer refuses this email for good (a PermanentFailure, which the circuit does
        not count); anything else is an outage or a hiccup, worth retrying.
        """
        async with self._circuit.guard():
            try:
                await self._converse(email)
            except aiosmtplib.SMTPResponseException as exc:
                if 500 <= exc.code < 600:
                    raise PermanentFailure(f"SMTP refused: {exc.code} {exc.message}") from exc
                raise

    async def _converse(self, email: OutgoingEmail) -> None:
        settings = self._settings
        message = EmailMessage()
        message["From"] = settings.sender_address
        message["To"] = email.recipient
        message["Subject"] = email.subject
        message["Message-ID"] = email.message_id
        message.set_content(email.body)
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            start_tls=settings.smtp_starttls,
            timeout=settings.smtp_timeout,
        )
