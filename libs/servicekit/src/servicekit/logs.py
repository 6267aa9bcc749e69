"""One log format for every service: time, service, level, logger, message."""

import logging


def configure_logging(service: str, level: str) -> None:
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("aiormq").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("aio_pika").setLevel(max(logging.WARNING, logging.getLevelName(level)))
