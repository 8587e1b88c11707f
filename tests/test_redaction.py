"""The redaction helper: every registered secret leaves any text it is in (issue 21, item 3)."""

from __future__ import annotations

import logging

import pytest

from asgi_rotator.redaction import (
    MIN_SECRET_LENGTH,
    REDACTED,
    redact,
    redact_bytes,
    redacting_logger,
    register_secret,
    register_url_password,
)

KEY = "sk-test-redaction-4f1d9b3c"


def test_a_registered_secret_is_replaced_wherever_it_appears() -> None:
    register_secret(KEY)
    text = f"Incorrect API key provided: {KEY}. ({KEY})"
    assert redact(text) == f"Incorrect API key provided: {REDACTED}. ({REDACTED})"
    assert redact_bytes(text.encode()) == redact(text).encode()
    assert redact("nothing secret here") == "nothing secret here"


def test_a_longer_secret_that_contains_another_goes_whole() -> None:
    register_secret("abcd-short-9e8d")
    register_secret("abcd-short-9e8d-and-longer")
    assert redact("x abcd-short-9e8d-and-longer y") == f"x {REDACTED} y"


def test_encoded_forms_are_redacted_too() -> None:
    secret = 'p@ss/w0rd+"quoted"-7c1e'
    register_secret(secret)
    assert redact("key=p%40ss%2Fw0rd%2B%22quoted%22-7c1e") == f"key={REDACTED}"
    assert redact('{"key": "p@ss/w0rd+\\"quoted\\"-7c1e"}') == f'{{"key": "{REDACTED}"}}'


def test_a_url_password_is_registered() -> None:
    register_url_password("redis://user:url-pass-5d2c8a@127.0.0.1:6379/0?password=qs-pass-1b7e")
    assert redact("AUTH url-pass-5d2c8a failed") == f"AUTH {REDACTED} failed"
    assert redact("qs-pass-1b7e") == REDACTED
    register_url_password("redis://127.0.0.1:6379/0")  # no password: nothing to hold


def test_very_short_values_are_not_secrets() -> None:
    register_secret("x" * (MIN_SECRET_LENGTH - 1))
    register_secret("")
    assert redact("xxx marks the spot") == "xxx marks the spot"


def test_the_logging_filter_cleans_message_arguments_and_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    register_secret(KEY)
    logger = redacting_logger("asgi_rotator.test_redaction")
    assert redacting_logger("asgi_rotator.test_redaction").filters.count(logger.filters[0]) == 1
    with caplog.at_level(logging.INFO, logger="asgi_rotator.test_redaction"):
        logger.info("upstream said %s", f"bad key {KEY}")
        try:
            raise RuntimeError(f"refused {KEY}")
        except RuntimeError:
            logger.exception("failed")
    text = caplog.text
    assert KEY not in text
    assert "upstream said bad key [redacted]" in text
    assert "RuntimeError: refused [redacted]" in text
