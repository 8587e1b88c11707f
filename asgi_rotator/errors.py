"""Every failure the gateway sees or makes becomes one ``GatewayError``.

    GatewayError(Exception)        kind + status + message + retry_after (+ param, provider)
      kinds: rate_limited          429, or a provider quota message
             overloaded            503 / Anthropic 529 / Gemini UNAVAILABLE
             server_error          other 5xx
             timeout               408, 504, our own TTFB/stall/total timeouts
             connection            refused, reset, DNS, premature close (502)
             context_window_exceeded
             content_filtered
             auth                  401 / 403
             bad_request           other 4xx, our own validation (413, 415 keep their status)
             not_found             404 / unknown route / unknown model

Layers decide on ``kind`` and ``retryable``, never on message text.  The message text is
read exactly once, here, to refine a 400 into ``context_window_exceeded`` or
``content_filtered`` and a 429 into a quota error, because providers signal those only in
words.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any, Literal

from .redaction import redact

__all__ = [
    "DEFAULT_STATUS",
    "RETRYABLE_KINDS",
    "ErrorKind",
    "PREMATURE_CLOSE",
    "GatewayError",
    "classify",
    "parse_retry_after",
    "parse_retry_delay",
    "premature_close",
]

ErrorKind = Literal[
    "rate_limited",
    "overloaded",
    "server_error",
    "timeout",
    "connection",
    "context_window_exceeded",
    "content_filtered",
    "auth",
    "bad_request",
    "not_found",
]

DEFAULT_STATUS: dict[str, int] = {
    "rate_limited": 429,
    "overloaded": 503,
    "server_error": 500,
    "timeout": 504,
    "connection": 502,
    "context_window_exceeded": 400,
    "content_filtered": 400,
    "auth": 401,
    "bad_request": 400,
    "not_found": 404,
}

# Another credential or another target may succeed where this one failed.
RETRYABLE_KINDS = frozenset({"rate_limited", "overloaded", "server_error", "timeout", "connection"})


class GatewayError(Exception):
    """A classified failure.  ``status`` is what the client should see; ``upstream_status`` is
    what the provider said, when a provider said anything."""

    __slots__ = (
        "code",
        "kind",
        "message",
        "param",
        "provider",
        "quota",
        "retry_after",
        "status",
        "upstream_status",
    )

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        upstream_status: int | None = None,
        retry_after: float | None = None,
        param: str | None = None,
        code: str | None = None,
        provider: str | None = None,
        quota: bool = False,
    ) -> None:
        # Whatever a provider put in its message, no secret the gateway holds goes further.
        message = redact(message)
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.status = status if status is not None else DEFAULT_STATUS[kind]
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.param = param
        self.code = code
        self.provider = provider
        self.quota = quota

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    def __repr__(self) -> str:
        return f"GatewayError({self.kind!r}, {self.message!r}, status={self.status})"


_CONTEXT_WORDS = re.compile(
    r"context[ _]length|context[ _]window|maximum context|too many tokens|prompt is too long"
    r"|input is too long|exceeds the maximum (?:number of )?tokens|token limit",
    re.IGNORECASE,
)
_FILTER_WORDS = re.compile(
    r"content[ _]policy|content[ _]filter|safety|responsible ?ai|flagged", re.IGNORECASE
)
_QUOTA_WORDS = re.compile(r"quota|insufficient_quota|billing|credit balance", re.IGNORECASE)


PREMATURE_CLOSE = "premature_close"


def premature_close() -> GatewayError:
    """An upstream stream that ended before its protocol's terminal event.  ``code`` marks it
    for the layers above (a close reason), which decide on kind and code, never on text."""
    return GatewayError(
        "connection", "upstream closed the stream before its terminal event", code=PREMATURE_CLOSE
    )


def classify(
    status: int,
    message: str = "",
    *,
    error_type: str | None = None,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    provider: str | None = None,
) -> GatewayError:
    """Turn a provider's HTTP error into a ``GatewayError``.

    ``error_type`` is the provider's own type/code/status string (``rate_limit_error``,
    ``RESOURCE_EXHAUSTED``, ``context_length_exceeded`` ...), consulted before the message.
    """
    hint = f"{error_type or ''} {message}"
    kind: ErrorKind
    quota = False
    if status == 429 or (error_type or "").upper() == "RESOURCE_EXHAUSTED":
        kind = "rate_limited"
        quota = bool(_QUOTA_WORDS.search(hint))
    elif status in (401, 403):
        kind = "auth"
    elif status == 404:
        kind = "not_found"
    elif status in (408, 504):
        kind = "timeout"
    elif status in (503, 529) or "overloaded" in hint.lower():
        kind = "overloaded"
    elif status >= 500:
        kind = "server_error"
    elif _CONTEXT_WORDS.search(hint):
        kind = "context_window_exceeded"
    elif _FILTER_WORDS.search(hint):
        kind = "content_filtered"
    else:
        kind = "bad_request"
    retry_after = parse_retry_after(headers) if headers is not None else None
    if retry_after is None and body is not None:
        retry_after = parse_retry_delay(body, message)
    # A provider status outside what clients expect (e.g. Anthropic's 529) still reaches an
    # Anthropic client as 529; other codecs map it when they render.
    return GatewayError(
        kind,
        message or f"upstream returned HTTP {status}",
        status=status,
        upstream_status=status,
        retry_after=retry_after,
        code=error_type,
        provider=provider,
        quota=quota,
    )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` (OpenAI), then ``Retry-After`` in seconds or as an HTTP date."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_TRY_AGAIN = re.compile(
    r"try again in\s+(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?)?\b",
    re.I,
)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def parse_retry_delay(body: Any, message: str = "") -> float | None:
    """Retry hints inside an error body: Google ``RetryInfo.retryDelay`` ("17s"), OpenAI's
    "Please try again in 1.5s" / "in 20ms"."""
    if isinstance(body, dict):
        error = body.get("error")
        details = error.get("details") if isinstance(error, dict) else None
        if isinstance(details, list):
            for detail in details:
                if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
                    match = _DURATION.match(str(detail.get("retryDelay", "")))
                    if match:
                        return float(match.group(1))
    match = _TRY_AGAIN.search(message)
    if match:
        amount = float(match.group(1))
        unit = (match.group(2) or "s").lower()
        if unit == "ms" or unit.startswith("milli"):
            return amount / 1000.0
        if unit.startswith("m"):
            return amount * 60.0
        return amount
    return None
