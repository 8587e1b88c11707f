"""Presets: what a provider declaration gets from a well-known name.

A preset fills protocol(s), base URL, the key variable, the auth header style, the request
shaping steps (``asgi_rotator.shaping``) and the credential's auth strategy; whatever the
provider declares itself wins (its own shaping steps run after the preset's).

The API presets (``openai`` ... ``mock``) live in ``config.PRESETS`` beside these.  The
backends below are those of coding tools, reached with the user's own credential, as the
tool's own client reaches them.  Each rule names the open-source client it comes from.  No
rule here imitates a client beyond what the backend requires of the credential: no user
agent or system prompt of another tool, no fingerprint.  Each backend's terms are the
user's to read (README, "Subscription backends").
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct, field

__all__ = ["BACKENDS", "Preset", "preset_name"]


class Preset(Struct, frozen=True, kw_only=True):
    protocols: tuple[str, ...]
    base_url: str
    env: str | None = None
    base_urls: dict[str, str] = field(default_factory=dict)
    auth: str | None = None  # the auth header style; None: the protocol's own
    # Request-shaping steps ({"step": ..., "options": {...}}), before the provider's own.
    shaping: tuple[dict[str, Any], ...] = ()
    # The auth strategy and its options when the provider names none (asgi_rotator.auth).
    credential: dict[str, Any] | None = None
    # Body fields (top-level names in the provider-native body, before any envelope) that carry a
    # session or prompt-cache key the backend wants repeated on every turn of a
    # conversation: the field cache's built-in rule ``provider_session_keys`` keeps one per
    # conversation and fills it in when the client sends none (docs/field-cache.md).
    session_keys: tuple[str, ...] = ()


def preset_name(provider: str, preset: str | None) -> str | None:
    """The preset a provider uses: the one it names, else one named like the provider, but
    never a backend below by name alone (they read the user's credential files and reshape
    requests: a provider gets that only by asking, ``preset = "codex"``)."""
    if preset is not None:
        return preset
    from .config import PRESETS  # local: config imports this module

    return provider if provider in PRESETS and provider not in BACKENDS else None


# Gemini's generateContent through Code Assist (``v1internal``): the body goes under
# ``request`` beside the envelope's ``fields``, the answer and each stream event come back
# under ``response``, and the method follows the version
# (``/v1internal:streamGenerateContent?alt=sse``).  google-gemini/gemini-cli,
# packages/core/src/code_assist/server.ts (the URL, ``alt=sse``) and converter.ts
# (``toGenerateContentRequest``: model, project, user_prompt_id, request;
# ``fromGenerateContentResponse``: the ``response`` field).
def _code_assist(fields: dict[str, str]) -> dict[str, Any]:
    return {
        "step": "envelope",
        "options": {
            "wrap": "request",
            "fields": fields,
            "unwrap": "response",
            "path": "/v1internal:{method}",
        },
    }


BACKENDS: dict[str, Preset] = {
    # Claude Code's subscription: the public Messages API with the OAuth access token of
    # Claude Code's credentials file, as a bearer token (never x-api-key), and the beta the
    # API requires for OAuth tokens.  sst/opencode-anthropic-auth (index.mjs: the
    # authorization header, x-api-key removed, ``anthropic-beta: oauth-2025-04-20`` merged
    # into the client's betas).
    "claude_code": Preset(
        protocols=("anthropic_messages",),
        base_url="https://api.anthropic.com",
        auth="bearer",
        shaping=(
            {"step": "headers", "options": {"append": {"anthropic-beta": "oauth-2025-04-20"}}},
        ),
        credential={
            "strategy": "oauth_file",
            "layout": "claude_code",
            "path": "~/.claude/.credentials.json",
        },
    ),
    # ChatGPT's Codex backend: OpenAI Responses at chatgpt.com/backend-api/codex.
    # openai/codex, codex-rs (its ChatGPT-auth Responses client: the ``chatgpt-account-id``
    # header from ~/.codex/auth.json's tokens.account_id, ``OpenAI-Beta:
    # responses=experimental``, ``store: false``, ``stream: true``, ``instructions`` always
    # sent); numman-ali/opencode-openai-codex-auth (its request transformer: the fields the
    # backend refuses, max_output_tokens and max_completion_tokens).  previous_response_id
    # goes too, since nothing is stored there: ResponsesState expands the lineage instead.
    "codex": Preset(
        protocols=("openai_responses",),
        base_url="https://chatgpt.com/backend-api/codex",
        auth="bearer",
        shaping=(
            {
                "step": "body_rules",
                "options": {
                    "drop": [
                        "previous_response_id",
                        "max_output_tokens",
                        "max_completion_tokens",
                    ],
                    "set": {"store": False},
                    "default": {"instructions": ""},
                },
            },
            {
                "step": "headers",
                "options": {
                    "set": {
                        "chatgpt-account-id": "{account_id}",
                        "openai-beta": "responses=experimental",
                    }
                },
            },
            {"step": "force_stream"},
        ),
        credential={"strategy": "oauth_file", "layout": "codex", "path": "~/.codex/auth.json"},
        # openai/codex, codex-rs/core/src/client.rs (stream_responses_api: ``prompt_cache_key``
        # is the conversation id, the same on every turn of one conversation).
        session_keys=("prompt_cache_key",),
    ),
    # GitHub Copilot's chat API: OpenAI Chat Completions at api.githubcopilot.com (no /v1),
    # with the short-lived Copilot token exchanged for the user's GitHub token
    # (api.github.com/copilot_internal/v2/token) and the integration and editor headers the
    # API requires.  ericc-ch/copilot-api, src/lib/api-config.ts (copilotHeaders:
    # ``copilot-integration-id: vscode-chat``, ``editor-version``); BerriAI/litellm,
    # litellm/llms/github_copilot (the same pair).  The editor version names this gateway.
    "copilot": Preset(
        protocols=("openai_chat",),
        base_url="https://api.githubcopilot.com",
        auth="bearer",
        shaping=(
            {
                "step": "headers",
                "options": {
                    "set": {
                        "copilot-integration-id": "vscode-chat",
                        "editor-version": "asgi-rotator/1",
                    }
                },
            },
            # The API host the exchanged token names for the account (endpoints.api;
            # individual, business and enterprise accounts have their own):
            # mobile-ar/xcode-assistant-copilot-server (its chat endpoint's base URL is the
            # credentials' API endpoint); ericc-ch/copilot-api (per-account API hosts).
            {"step": "base_url", "options": {"context": "api_base"}},
        ),
        # The GitHub token (a Copilot-enabled account's OAuth token) from the environment.
        credential={"strategy": "token_exchange", "token": "env:GITHUB_TOKEN"},
    ),
    # Gemini CLI's Code Assist: see _code_assist; the project comes from the
    # credential's project discovery (loadCodeAssist, onboardUser).
    "gemini_cli": Preset(
        protocols=("gemini",),
        base_url="https://cloudcode-pa.googleapis.com",
        auth="bearer",
        shaping=(
            _code_assist(
                {"model": "{model}", "project": "{project}", "user_prompt_id": "{request_id}"}
            ),
        ),
        credential={"strategy": "google_oauth", "path": "~/.gemini/oauth_creds.json"},
        # google-gemini/gemini-cli, packages/core/src/code_assist/converter.ts
        # (toVertexGenerateContentRequest: the CLI session's ``session_id`` inside ``request``,
        # which is where the envelope puts the Gemini body).
        session_keys=("session_id",),
    ),
    # Antigravity: the same Code Assist API, with its own envelope fields and endpoint.
    # NoeFabris/opencode-antigravity-auth, src/plugin/request.ts and src/constants.ts (the
    # daily endpoint; ``project``, ``model``, ``userAgent: antigravity``, ``requestType:
    # agent``, ``requestId``, ``request``); router-for-me/CLIProxyAPI,
    # internal/runtime/executor/antigravity_executor.go (the same envelope).
    "antigravity": Preset(
        protocols=("gemini",),
        base_url="https://daily-cloudcode-pa.sandbox.googleapis.com",
        auth="bearer",
        shaping=(
            _code_assist(
                {
                    "project": "{project}",
                    "model": "{model}",
                    "userAgent": "antigravity",
                    "requestType": "agent",
                    "requestId": "agent-{request_id}",
                }
            ),
        ),
        # Google user credentials in Gemini CLI's layout, written by the Antigravity login.
        credential={"strategy": "google_oauth", "path": "~/.antigravity/oauth_creds.json"},
    ),
}
