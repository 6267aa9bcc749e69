"""A local SMTP server for development and tests: accepts every email, keeps it in an mbox.

python deploy/smtp_sink.py --port 1025 --mbox .run/mail.mbox
"""

import argparse
import asyncio
import logging
import signal
from email import message_from_bytes
from email.generator import BytesGenerator
from email.policy import compat32
from pathlib import Path

from aiosmtpd.controller import Controller

log = logging.getLogger("smtp-sink")


class MboxHandler:
    """Appends each email to an mbox file (`mailbox.mbox` rewrites the whole file per add).

    The email is parsed with the compat32 policy: headers stay strings, a quarter of the
    cost of the modern policy's header objects, which nothing here needs."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd hook
        message = message_from_bytes(envelope.content, policy=compat32)
        with self._path.open("ab") as mbox:
            BytesGenerator(mbox, mangle_from_=True).flatten(message, unixfrom=True)
            mbox.write(b"\n")
        log.info("mail to %s: %s", ", ".join(envelope.rcpt_tos), message["Subject"])
        return "250 Message accepted for delivery"


async def serve(host: str, port: int, mbox: Path) -> None:
    controller = Controller(MboxHandler(mbox), hostname=host, port=port)
    controller.start()
    log.info("listening on %s:%s, keeping mail in %s", host, port, mbox)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--mbox", type=Path, default=Path(".run/mail.mbox"))
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s smtp-sink %(levelname)s: %(message)s"
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command
    asyncio.run(serve(args.host, args.port, args.mbox))


if __name__ == "__main__":
    main()
