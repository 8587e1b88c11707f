from __future__ import annotations

import email.utils
import time

import pytest

from asgi_rotator.errors import (
    RETRYABLE_KINDS,
    GatewayError,
    classify,
    parse_retry_after,
    parse_retry_delay,
)


@pytest.mark.parametrize(
    ("status", "message", "error_type", "kind"),
    [
        (429, "Rate limit reached", "rate_limit_exceeded", "rate_limited"),
        (400, "quota", "RESOURCE_EXHAUSTED", "rate_limited"),
        (401, "bad key", None, "auth"),
        (403, "forbidden", None, "auth"),
        (404, "no such model", None, "not_found"),
        (408, "request timeout", None, "timeout"),
        (504, "gateway timeout", None, "timeout"),
        (503, "unavailable", None, "overloaded"),
        (529, "Overloaded", "overloaded_error", "overloaded"),
        (500, "boom", None, "server_error"),
        (502, "bad gateway", None, "server_error"),
        (400, "This model's maximum context length is 8192 tokens", "context_length_exceeded", "context_window_exceeded"),
        (400, "prompt is too long: 250000 tokens > 200000 maximum", None, "context_window_exceeded"),
        (400, "Your request was rejected by our content policy", None, "content_filtered"),
        (400, "temperature must be <= 2", None, "bad_request"),
    ],
)
def test_classify(status: int, message: str, error_type: str | None, kind: str) -> None:
    error = classify(status, message, error_type=error_type)
    assert error.kind == kind
    assert error.upstream_status == status
    assert error.message == message
    assert error.retryable == (kind in RETRYABLE_KINDS)


def test_quota_is_flagged_on_rate_limits() -> None:
    assert classify(429, "You exceeded your current quota", error_type="insufficient_quota").quota
    assert not classify(429, "Rate limit reached for requests").quota


def test_retry_after_header_forms() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (parse_retry_after({"retry-after": future}) or 0) <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_retry_hints_in_bodies() -> None:
    google = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}],
        }
    }
    assert parse_retry_delay(google) == 17.0
    assert parse_retry_delay({}, "Rate limit reached. Please try again in 1.5s.") == 1.5
    assert parse_retry_delay({}, "Please try again in 20ms.") == 0.02
    assert parse_retry_delay({}, "Please try again in 2 minutes") == 120.0
    assert parse_retry_delay({}, "no hint here") is None


def test_header_wins_over_body_hint() -> None:
    error = classify(429, "try again in 30s", headers={"retry-after": "3"}, body={})
    assert error.retry_after == 3.0
    assert classify(429, "try again in 30s", headers={}, body={}).retry_after == 30.0


def test_repr_and_str_carry_no_more_than_the_message() -> None:
    error = GatewayError("auth", "invalid API key", provider="openai")
    assert str(error) == "invalid API key"
    assert repr(error) == "GatewayError('auth', 'invalid API key', status=401)"
