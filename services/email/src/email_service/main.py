"""Composition root of the email service."""

from pathlib import Path

from fastapi import FastAPI

from servicekit.breaker import CircuitBreaker
from servicekit.consumer import EventConsumer
from servicekit.service import ConsumerFactory, ServiceSpec, build_app

from .adapters.smtp import SmtpSender
from .config import EmailSettings
from .entrypoints.amqp import SENDING_EMAIL, event_handlers
from .entrypoints.http import router
from .handlers import SERVICE

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def create_app(
    settings: EmailSettings | None = None, *, consumer_factory: ConsumerFactory = EventConsumer
) -> FastAPI:
    settings = settings or EmailSettings()
    smtp_circuit = CircuitBreaker(
        "smtp",
        failure_threshold=settings.smtp_circuit_failure_threshold,
        reset_timeout=settings.smtp_circuit_reset_timeout,
    )
    sender = SmtpSender(settings, smtp_circuit)
    return build_app(
        ServiceSpec(
            name=SERVICE,
            settings=settings,
            routers=[router],
            handlers=event_handlers(sender),
            applied_alone=SENDING_EMAIL,
            circuits=[smtp_circuit],
            on_stop=[sender.close],
        ),
        consumer_factory=consumer_factory,
    )
