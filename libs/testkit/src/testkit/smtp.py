"""An in-process SMTP server that keeps every message it accepts."""

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller

from .servers import free_port


class CapturingSmtpHandler:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.peers: list[tuple[str, int]] = []
        """The client address and port of each accepted message's connection, in order."""
        self.recipients: list[list[str]] = []
        """Each accepted message's envelope recipients (RCPT TO), in order."""
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self._lock:
            self.messages.append(message_from_bytes(envelope.content, policy=default_policy))
            self.peers.append(tuple(session.peer[:2]))
            self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    def connections_for(self, text: str) -> set[tuple[str, int]]:
        """The connections the messages mentioning `text` came over."""
        with self._lock:
            return {
                peer
                for message, peer in zip(self.messages, self.peers, strict=True)
                if text in message["Subject"] or text in message.as_string()
            }

    def about(self, text: str) -> list[EmailMessage]:
        """Messages whose subject or body mentions `text` (e.g. an order id)."""
        with self._lock:
            return [m for m in self.messages if text in m["Subject"] or text in m.as_string()]


@dataclass
class SmtpSink:
    host: str
    port: int
    handler: CapturingSmtpHandler


@contextlib.contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    """An SMTP server on a free local port for the duration of the block."""
    handler = CapturingSmtpHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpSink("127.0.0.1", controller.port, handler)
    finally:
        controller.stop()
