"""Every secret the gateway holds, and one helper that removes them from any text.

Providers echo keys back ("Incorrect API key provided: sk-..."), exceptions carry URLs, and
what the gateway passes on or writes (error messages to clients, log lines, stream close
records, trace attributes, usage logs) may contain that text.  So the secrets are collected
where they are read, in one process-wide registry, and removed from text at the cause:

* ``GatewayError`` redacts its message when it is made, which covers every upstream error
  message on every path (same protocol and translated, before and after commit), the
  stream close records and anything else that shows an error;
* dispatch redacts an upstream in-band error event it relays verbatim (same protocol);
* the gateway's loggers carry ``RedactingFilter`` (``redacting_logger``), which cleans the
  message, its arguments and a traceback.

Anything else that writes text it did not make (a tracing, usage or ops layer) calls
``redact`` (or ``redact_bytes``) on it.  Who reads a secret calls ``register_secret``:
the providers' keys and auth-bearing headers, the inbound keys, the password of a Redis URL
(and an OAuth token source, for each token it obtains).

Why process-wide: every layer and every writer must see the same secrets without being
handed an object, including one used alone around a foreign app.  The registry only grows
(a secret once held stays redacted), and holds strings the process already holds.

A secret shorter than ``MIN_SECRET_LENGTH`` characters is not registered: it would turn
ordinary words into ``[redacted]`` (``keys = ["none"]`` for a local server) and no real
key is that short.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from urllib.parse import quote, unquote, urlsplit

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "RedactingFilter",
    "redact",
    "redact_bytes",
    "redacting_logger",
    "register_secret",
    "register_url_password",
]

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4

_lock = threading.Lock()
_secrets: set[str] = set()
# Rebuilt on the first redaction after a change (registration happens at startup; the
# pattern is a longest-first alternation so a secret that contains another goes whole).
_pattern: re.Pattern[str] | None = None
_bytes_pattern: re.Pattern[bytes] | None = None


def register_secret(secret: str | None) -> None:
    """Hold ``secret`` as one to remove from every text from now on (also its
    percent-encoded form, as it appears in a URL or a form body)."""
    global _pattern, _bytes_pattern
    if not secret:
        return
    # As written, trimmed, in a URL or form body, and inside a JSON string.
    forms = {secret, secret.strip(), quote(secret, safe=""), json.dumps(secret)[1:-1]}
    with _lock:
        new = {f for f in forms if len(f) >= MIN_SECRET_LENGTH} - _secrets
        if new:
            _secrets.update(new)
            _pattern = _bytes_pattern = None


def register_url_password(url: str | None) -> None:
    """Hold the password (and a ``password=`` query value) of a URL such as Redis's."""
    if not url:
        return
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return
    if password:
        register_secret(password)
        register_secret(unquote(password))
    for item in parts.query.split("&"):
        name, _, value = item.partition("=")
        if name.lower() == "password" and value:
            register_secret(unquote(value))


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``[redacted]``."""
    if not _secrets or not text:
        return text
    pattern = _pattern or _compile()
    return pattern.sub(REDACTED, text)


def redact_bytes(data: bytes) -> bytes:
    """``redact`` for bytes (UTF-8 text, such as an SSE event's data)."""
    if not _secrets or not data:
        return data
    pattern = _bytes_pattern or _compile_bytes()
    return pattern.sub(REDACTED.encode(), data)


class RedactingFilter(logging.Filter):
    """A logging filter that removes the registered secrets from a record's message,
    traceback and stack, whoever formats it afterwards."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # Formatted here only when it holds a secret: otherwise the host's formatter
            # still formats it its own way.
            text = logging.Formatter().formatException(record.exc_info)
            if redact(text) != text:
                record.exc_text = redact(text)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def redacting_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with ``RedactingFilter`` on it (once)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def _compile() -> re.Pattern[str]:
    global _pattern
    with _lock:
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(map(re.escape, ordered)))
        return _pattern


def _compile_bytes() -> re.Pattern[bytes]:
    global _bytes_pattern
    with _lock:
        ordered = sorted(_secrets, key=len, reverse=True)
        _bytes_pattern = re.compile(b"|".join(re.escape(s.encode()) for s in ordered))
        return _bytes_pattern
