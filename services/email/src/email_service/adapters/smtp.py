"""Sending email over a real SMTP conversation."""

from email.message import EmailMessage

import aiosmtplib

from ..config import EmailSettings
from ..domain.messages import OutgoingEmail


class SmtpSender:
    def __init__(self, settings: EmailSettings) -> None:
        self._settings = settings

    async def send(self, email: OutgoingEmail) -> None:
        """Hand the email to the SMTP server; raises if it is not accepted."""
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
