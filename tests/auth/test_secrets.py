"""Tokens are secrets: a canary token, its refresh token and the tokens a refresh brings
appear in no log line, error body, exported trace byte, close record, request log line or
repr, even when the upstream quotes them back."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import anthropic
import pytest

from asgi_rotator.config import parse_config
from asgi_rotator.mock import Fault, MockUpstream, TokenAuthority
from asgi_rotator.stack import build_app
from tests.auth.conftest import claude_file, claude_provider
from tests.otlp_receiver import receiving, wait_for_spans
from tests.server import serve

# Shapes no well-known key pattern matches: only the gateway's knowledge of its own tokens
# can keep them out.
ACCESS_CANARY = "canaryAccessToken5d1e7b20"
REFRESH_CANARY = "canaryRefreshToken93c0af11"
HI = [{"role": "user", "content": "hi"}]


def test_no_token_in_logs_errors_traces_or_close_records(
    upstream: tuple[MockUpstream, str],
    authority: TokenAuthority,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mock, url = upstream
    authority.access[ACCESS_CANARY] = time.time() + 3600
    authority.refresh.add(REFRESH_CANARY)
    path = claude_file(tmp_path / "c.json", ACCESS_CANARY, REFRESH_CANARY, time.time() + 3600)
    close_log, request_log = tmp_path / "close.jsonl", tmp_path / "requests.jsonl"
    errors: list[str] = []
    with receiving() as receiver, caplog.at_level(logging.DEBUG):
        config = parse_config(
            {
                "providers": {"claude": claude_provider(url, path)},
                "stream": {"close_log": str(close_log)},
                "logging": {"requests": str(request_log)},
                "tracing": {"endpoint": receiver.url, "capture_content": True},
                "cooldown": {"max_attempts": 1},
            },
            {},
        )
        app = build_app(config, environ={"OTEL_METRIC_EXPORT_INTERVAL": "60000"})
        shown = [repr(config), repr(app.providers.providers["claude"].strategy)]
        with (
            serve(app) as gw,
            anthropic.Anthropic(base_url=gw, api_key="client", max_retries=0) as client,
        ):
            # The provider quotes the token it refuses: refreshed, resent, answered.
            mock.add_fault(Fault(status=401, message=f"token {ACCESS_CANARY} is revoked"))
            client.messages.create(model="claude/mock-claude", max_tokens=64, messages=HI)
            fresh = [r.key for r in mock.requests if r.protocol][-1]
            assert fresh is not None and fresh != ACCESS_CANARY
            rotated = next(iter(authority.refresh))
            # A stream whose in-band error quotes the refreshed token.
            mock.add_fault(Fault(status=500, error_event_after=1, message=f"backend saw {fresh}"))
            try:
                with client.messages.stream(
                    model="claude/mock-claude", max_tokens=64, messages=HI
                ) as stream:
                    errors.extend(repr(event) for event in stream)
            except anthropic.APIError as exc:
                errors.append(str(exc))
            # Refused twice, quoting both tokens: the error the client gets.
            mock.add_fault(Fault(status=401, message=f"bad {fresh} / {ACCESS_CANARY}", times=2))
            with pytest.raises(anthropic.AuthenticationError) as refused:
                client.messages.create(model="claude/mock-claude", max_tokens=64, messages=HI)
            errors.append(str(refused.value))
            errors.append(repr(refused.value.body))
        spans = wait_for_spans(receiver, lambda s: len(s) >= 3)
        exported = receiver.all_bytes()
    assert spans and exported
    texts = {
        "errors": "\n".join(errors),
        "logs": caplog.text,
        "close records": close_log.read_text(),
        "request log": request_log.read_text(),
        "reprs": "\n".join(shown),
    }
    assert "backend saw" in texts["errors"]  # the quoting reached the client, redacted
    for secret in (ACCESS_CANARY, REFRESH_CANARY, fresh, rotated):
        for where, text in texts.items():
            assert secret not in text, f"a token in the {where}"
        assert secret.encode() not in exported, "a token in the exported telemetry"
