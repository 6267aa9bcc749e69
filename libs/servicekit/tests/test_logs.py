"""What the service log writes: a token in a URL never reaches it."""

import logging

import pytest

from servicekit.logs import configure_logging


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_token_in_a_request_line_is_redacted(capsys, log_format) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("orders", "INFO", log_format)
    try:
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            "/orders/6f1c/events?access_token=eyJhbGciOi.secret.sig&x=1",
            "1.1",
            200,
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

    written = capsys.readouterr().err
    assert "/orders/6f1c/events?access_token=<redacted>&x=1" in written
    assert "secret" not in written
