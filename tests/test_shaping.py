"""Request-shaping steps: what each does to a provider-native request, and how a mistake in
their declaration is reported."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_rotator.config import ConfigError, parse_config
from asgi_rotator.errors import GatewayError
from asgi_rotator.shaping import Shaping, ShapingContext, make_step, step_names


def context(**extra: str) -> ShapingContext:
    return ShapingContext("p", "m-1", extra, request_id="req_1")


def shaped(steps: list[dict[str, Any]], body: dict[str, Any], path: str = "/x", **extra: str):
    shaping = Shaping(make_step(s["step"], s.get("options", {})) for s in steps)
    return shaping.shape(context(**extra), body, path)


def test_headers_set_replaces_and_append_merges_a_list() -> None:
    step = make_step(
        "headers",
        {"set": {"X-Account": "{account_id}"}, "append": {"anthropic-beta": "oauth-1"}},
    )
    headers = [("x-account", "old"), ("anthropic-beta", "a-1,b-2")]
    step.headers(context(account_id="acct"), headers)
    assert headers == [("anthropic-beta", "a-1,b-2,oauth-1"), ("x-account", "acct")]
    again = [("anthropic-beta", "oauth-1")]
    step.headers(context(account_id="acct"), again)
    assert dict(again)["anthropic-beta"] == "oauth-1"  # not listed twice


def test_body_rules_set_default_drop() -> None:
    body, _ = shaped(
        [
            {
                "step": "body_rules",
                "options": {
                    "set": {"store": False, "meta.kind": "x"},
                    "default": {"instructions": "", "top": 1},
                    "drop": ["previous_response_id", "meta.secret"],
                },
            }
        ],
        {"store": True, "top": 2, "previous_response_id": "r", "meta": {"secret": 1}},
    )
    assert body == {"store": False, "top": 2, "instructions": "", "meta": {"kind": "x"}}


@pytest.mark.parametrize(
    ("rule", "body", "says"),
    [
        ("require", {}, "requires `instructions`"),
        ("refuse", {"instructions": ""}, "does not accept"),
    ],
)
def test_body_rules_require_and_refuse_are_the_clients_error(
    rule: str, body: dict[str, Any], says: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        shaped([{"step": "body_rules", "options": {rule: ["instructions"]}}], body)
    assert caught.value.kind == "bad_request"
    assert caught.value.status == 400
    assert caught.value.param == "instructions"
    assert says in caught.value.message


def test_envelope_wraps_rewrites_the_path_and_unwraps() -> None:
    step = {
        "step": "envelope",
        "options": {
            "wrap": "request",
            "fields": {"model": "{model}", "project": "{project}", "id": "agent-{request_id}"},
            "unwrap": "response",
            "path": "/v1internal:{method}",
        },
    }
    body, path = shaped(
        [step], {"contents": []}, "/v1beta/models/m-1:streamGenerateContent?alt=sse", project="p9"
    )
    assert path == "/v1internal:streamGenerateContent?alt=sse"
    assert body["request"] == {"contents": []}
    assert (body["model"], body["project"]) == ("m-1", "p9")
    assert body["id"] == "agent-req_1"
    shaping = Shaping([make_step("envelope", step["options"])])
    assert shaping.unwrap({"response": {"candidates": []}, "traceId": "t"}) == {"candidates": []}
    assert shaping.unwrap({"error": {"code": 400}}) == {"error": {"code": 400}}


def test_a_template_field_the_credential_lacks_is_an_auth_error_naming_it() -> None:
    step = {"step": "headers", "options": {"set": {"chatgpt-account-id": "{account_id}"}}}
    shaping = Shaping([make_step(step["step"], step["options"])])
    with pytest.raises(GatewayError) as caught:
        shaping.headers(context(), [])
    assert caught.value.kind == "auth"
    assert "'account_id'" in caught.value.message


def test_force_stream_and_removes() -> None:
    shaping = Shaping(
        [
            make_step("force_stream", {}),
            make_step("body_rules", {"drop": ["previous_response_id"]}),
        ]
    )
    assert shaping.forces_stream
    assert shaping.removes("previous_response_id")
    assert not shaping.removes("store")


def test_step_names_are_the_builtins() -> None:
    assert step_names() == ["base_url", "body_rules", "envelope", "force_stream", "headers"]


def test_base_url_is_the_grants_when_it_names_one() -> None:
    shaping = Shaping([make_step("base_url", {})])
    base = "https://api.githubcopilot.com"
    named = "https://api.business.githubcopilot.com/"
    assert shaping.base_url(context(api_base=named), base) == named.rstrip("/")
    assert shaping.base_url(context(), base) == base
    assert shaping.base_url(context(api_base="file:///etc"), base) == base


@pytest.mark.parametrize(
    ("step", "path", "says"),
    [
        ({"step": "nope"}, "shaping[0].step", "unknown 'nope'"),
        ({"step": "headers"}, "shaping[0].options", "expected `set` or `append`"),
        ({"step": "headers", "options": {"set": {"x": 1}}}, "shaping[0].options.set", "template"),
        (
            {"step": "headers", "options": {"set": {"x": "{a.b}"}}},
            "shaping[0].options.set.x",
            "plain field",
        ),
        (
            {"step": "envelope", "options": {"fields": {"a": "b"}}},
            "shaping[0].options.fields",
            "needs `wrap`",
        ),
        (
            {"step": "envelope", "options": {"path": "v1"}},
            "shaping[0].options.path",
            "starting with '/'",
        ),
        (
            {"step": "body_rules", "options": {"drop": ["a[0]"]}},
            "shaping[0].options.drop",
            "must be a key",
        ),
        ({"step": "force_stream", "options": {"x": 1}}, "shaping[0].options", "unknown ['x']"),
    ],
)
def test_a_bad_step_is_a_config_error_with_its_path(
    step: dict[str, Any], path: str, says: str
) -> None:
    provider = {"protocol": "gemini", "base_url": "http://h", "keys": ["k"], "shaping": [step]}
    with pytest.raises(ConfigError) as caught:
        parse_config({"providers": {"x": provider}}, {})
    (problem,) = caught.value.problems
    assert f"providers.x.{path}" in problem
    assert says in problem


def test_every_preset_builds() -> None:
    from asgi_rotator.presets import BACKENDS
    from asgi_rotator.providers import Providers

    providers = {
        name: {"preset": name, "credential": {"strategy": "keys", "keys": ["k"]}}
        for name in BACKENDS
    }
    built = Providers(parse_config({"providers": providers}, {}), {})
    for name in BACKENDS:
        provider = built.providers[name]
        assert provider.shaping is not None
        assert provider.auth == "bearer"
    assert not built.providers["codex"].continues_natively


def test_a_model_in_a_path_template_cannot_change_the_url() -> None:
    step = [{"step": "envelope", "options": {"path": "/v1/{model}:{method}"}}]
    _, path = shaped(step, {}, "/v1beta/models/x:generateContent")
    assert path == "/v1/m-1:generateContent"
    shaping = Shaping([make_step("envelope", step[0]["options"])])
    with pytest.raises(GatewayError) as caught:
        shaping.shape(ShapingContext("p", "../admin", {}), {}, "/v1beta/models/x:generateContent")
    assert caught.value.param == "model"


def test_a_backend_preset_applies_only_when_named() -> None:
    from asgi_rotator.providers import Providers

    own = {"protocol": "openai_responses", "base_url": "http://h/v1", "keys": ["k"]}
    built = Providers(
        parse_config({"providers": {"codex": own, "chatgpt": {**own, "preset": "codex"}}}, {}),
        {},
    )
    assert built.providers["codex"].shaping is None  # its name alone is not a request
    assert built.providers["chatgpt"].shaping is not None
    with pytest.raises(ConfigError) as caught:
        parse_config({"providers": {"copilot": {"keys": ["k"]}}}, {})
    assert "providers.copilot: needs `protocol` (or a `preset`)" in str(caught.value)


def test_a_header_set_by_a_step_is_a_secret_like_the_providers_headers() -> None:
    from asgi_rotator.providers import Providers
    from asgi_rotator.redaction import redact

    literal = "proxy-secret-5f1c2e9a"
    step = {"step": "headers", "options": {"set": {"x-proxy-key": literal}}}
    provider = {"protocol": "openai_chat", "base_url": "http://h/v1", "keys": ["k"]}
    config = parse_config({"providers": {"p": {**provider, "shaping": [step]}}}, {})
    assert literal not in repr(config.providers["p"])
    Providers(config, {})
    assert literal not in redact(f"upstream said: bad key {literal}")
