"""Model names at the edge, in URL paths, and ``allow_models = "listed"`` (issue 21, item 1)."""

from __future__ import annotations

import pytest

from asgi_rotator.config import ConfigError, parse_config
from asgi_rotator.errors import GatewayError
from asgi_rotator.model_names import MAX_MODEL_NAME, check_model_name, path_segment
from asgi_rotator.protocols import get_codec
from asgi_rotator.providers import Providers
from tests.reliability.hostile import CLIENT_PROTOCOLS, base_body

ACCEPTED = [
    "gpt-4.1",
    "openai/gpt-4.1",
    "router/meta-llama/llama-3-8b:free",
    "llama3:8b",
    "anthropic.claude-3-sonnet-20240229-v1:0",
    "models/gemini-2.5-flash",
    "mock gemini",
    "modèle",
    "x" * MAX_MODEL_NAME,
]
REFUSED = [
    "",
    "m?key=x",
    "m#x",
    "m%2F",
    "m\\x",
    "a/../b",
    "a/./b",
    "a//b",
    "/a",
    "a/",
    "..",
    "m\n",
    "m\r",
    "m\t",
    "m\x00",
    "m\x1b[31m",
    "m\x7f",
    "m\x85",
    "m\u2028",
    "m\u200b",
    "m\ufeff",
    "x" * (MAX_MODEL_NAME + 1),
]


@pytest.mark.parametrize("name", ACCEPTED)
def test_ordinary_names_pass_the_edge(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", REFUSED)
def test_names_that_change_a_url_or_a_log_line_are_refused(name: str) -> None:
    with pytest.raises(GatewayError) as caught:
        check_model_name(name)
    assert (caught.value.kind, caught.value.status, caught.value.param) == (
        "bad_request",
        400,
        "model",
    )
    assert caught.value.message.startswith("model: ")


@pytest.mark.parametrize("protocol", CLIENT_PROTOCOLS)
@pytest.mark.parametrize("name", ["m?x=1", "m\nx", "a/../b"])
def test_every_codec_refuses_them_at_parse(protocol: str, name: str) -> None:
    codec = get_codec(protocol)
    body = base_body(protocol, name)
    with pytest.raises(GatewayError) as caught:
        codec.parse_request(body, model=name if protocol == "gemini" else None)
    assert caught.value.param == "model"


@pytest.mark.parametrize("name", ["a/b", "m:countTokens", "m?x", "m#x", "m%41", "m\x00"])
def test_a_path_segment_refuses_what_would_change_the_template(name: str) -> None:
    with pytest.raises(GatewayError) as caught:
        path_segment(name)
    assert caught.value.param == "model"


def test_a_path_segment_is_percent_encoded() -> None:
    assert path_segment("gemini-2.5-flash") == "gemini-2.5-flash"
    assert path_segment("a b&c=d;e") == "a%20b%26c%3Dd%3Be"
    assert path_segment("modèle") == "mod%C3%A8le"


def _providers(allow: str, **extra: object) -> Providers:
    provider = {
        "protocol": "openai_chat",
        "base_url": "http://127.0.0.1:1/v1",
        "keys": ["k"],
        "models": ["gpt-a", "gpt-b"],
        "allow_models": allow,
    }
    config = {"providers": {"p": provider, "q": {**provider, "allow_models": "any"}}, **extra}
    return Providers(parse_config(config, {}), {})


def test_allow_models_any_lets_a_client_name_any_model_of_a_provider() -> None:
    (target,) = _providers("any").resolve("p/anything")
    assert target.name == "p/anything"


def test_allow_models_listed_makes_the_models_list_an_allow_list() -> None:
    providers = _providers("listed")
    assert [t.name for t in providers.resolve("p/gpt-a")] == ["p/gpt-a"]
    with pytest.raises(GatewayError) as caught:
        providers.resolve("p/gpt-4.1")
    assert (caught.value.kind, caught.value.param) == ("not_found", "model")
    assert "gpt-a" in caught.value.message
    assert [t.name for t in providers.resolve("q/gpt-4.1")] == ["q/gpt-4.1"]  # per provider


def test_allow_models_listed_is_checked_for_groups_at_startup() -> None:
    with pytest.raises(ConfigError, match=r"groups\.g\.targets\[1\]"):
        _providers("listed", groups={"g": {"targets": ["p/gpt-a", "p/other"]}})


def test_allow_models_listed_needs_a_models_list() -> None:
    provider = {"protocol": "openai_chat", "base_url": "http://h/v1", "allow_models": "listed"}
    with pytest.raises(ConfigError, match=r"providers\.p\.allow_models"):
        parse_config({"providers": {"p": provider}}, {})
    with pytest.raises(ConfigError, match=r"providers\.p\.allow_models"):
        parse_config({"providers": {"p": {**provider, "allow_models": "some"}}}, {})
