from __future__ import annotations

import json
from pathlib import Path

import pytest

from asgi_rotator.cli import main
from asgi_rotator.config import ConfigError, config_from_env, load_config, parse_config
from asgi_rotator.errors import GatewayError
from asgi_rotator.providers import Providers

EXAMPLE = """
[server]
host = "127.0.0.1"
port = 8080

[providers.openai]
protocols = ["openai_chat", "openai_responses"]
base_url = "https://api.openai.com/v1"
keys = ["env:OPENAI_API_KEY", "sk-literal-second"]
models = ["gpt-4.1", "gpt-4.1-mini"]

[providers.claude]
protocol = "anthropic_messages"
base_url = "https://api.anthropic.com"
keys = ["env:ANTHROPIC_API_KEY"]

[providers.gemini]
protocol = "gemini"
base_url = "https://generativelanguage.googleapis.com"
keys = ["env:GEMINI_API_KEY"]
models = ["gemini-2.5-flash"]

[groups.smart]
targets = ["claude/claude-sonnet-4-5", "openai/gpt-4.1"]

[stream]
ttfb_timeout = 30.0
stall_timeout = 60.0
heartbeat_interval = 15.0
"""
ENV = {
    "OPENAI_API_KEY": "sk-openai-secret",
    "ANTHROPIC_API_KEY": "sk-ant-secret",
    "GEMINI_API_KEY": "g-secret",
}


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_and_json_are_the_same_schema(tmp_path: Path) -> None:
    toml_config = load_config(write(tmp_path, EXAMPLE), ENV)
    import tomllib

    json_config = load_config(
        write(tmp_path, json.dumps(tomllib.loads(EXAMPLE)), "gateway.json"), ENV
    )
    assert toml_config == json_config
    assert toml_config.providers["openai"].models == ["gpt-4.1", "gpt-4.1-mini"]
    assert toml_config.stream.stall_timeout == 60.0


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('[server]\nport = "eighty"', 'server.port: expected `int`, got `str` (got "eighty")'),
        (
            '[providers.x]\nprotocol = "openai_chat"\nbase_url = "http://h"\ntimeout = "fast"',
            'providers.x.timeout: expected `float`, got `str` (got "fast")',
        ),
        (
            '[providers.x]\nprotocol = "smoke_signals"\nbase_url = "http://h"',
            "providers.x.protocols[0]: unknown protocol 'smoke_signals'",
        ),
        ('[providers.x]\nbase_url = "http://h"', "providers.x: needs `protocol`"),
        (
            '[providers.x]\nprotocol = "gemini"\nbase_url = "http://h"\nkye = []',
            "providers.x: Object contains unknown field `kye`",
        ),
        (
            "[groups.g]\ntargets = [42]",
            "groups.g.targets[0]: expected `str | object`, got `int` (got 42)",
        ),
        ("[server\n", "not valid TOML"),
    ],
)
def test_errors_name_the_path_and_value(tmp_path: Path, snippet: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, snippet), {})
    assert expected in str(info.value)


def test_environment_overrides() -> None:
    env = {"ASGI_ROTATOR__SERVER__PORT": "9001", "ASGI_ROTATOR__PROVIDERS__LOCAL__PRESET": "ollama"}
    config = parse_config({"server": {"port": 1}}, env)
    assert config.server.port == 9001
    assert config.providers["local"].preset == "ollama"


def test_providers_from_standard_environment_variables() -> None:
    env = {
        "OPENAI_API_KEY": "a",
        "OPENAI_API_KEY_1": "b",
        "GOOGLE_API_KEY": "c",
        "GROQ_API_KEY": "d",
    }
    config = config_from_env(env)
    assert config.providers["openai"].keys == ["env:OPENAI_API_KEY", "env:OPENAI_API_KEY_1"]
    assert config.providers["gemini"].keys == ["env:GOOGLE_API_KEY"]
    providers = Providers(config, env)
    assert [c.id for c in providers.providers["openai"].credentials] == ["openai#0", "openai#1"]
    assert providers.providers["groq"].base_urls["openai_chat"] == "https://api.groq.com/openai/v1"


def test_presets_need_only_a_name_and_key() -> None:
    config = parse_config(
        {
            "providers": {
                "openrouter": {"keys": ["k"]},
                "mine": {"preset": "deepseek", "keys": ["k"]},
            }
        },
        {},
    )
    providers = Providers(config, {})
    router = providers.providers["openrouter"]
    assert router.protocols == ("openai_chat", "openai_responses", "anthropic_messages")
    assert (
        router.url("anthropic_messages", "/v1/messages") == "https://openrouter.ai/api/v1/messages"
    )
    assert (
        providers.providers["mine"].url("openai_chat", "/chat/completions")
        == "https://api.deepseek.com/v1/chat/completions"
    )


def test_missing_key_variable_is_named(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE), {})
    with pytest.raises(
        ConfigError,
        match=r"providers.openai.keys\[0\]: environment variable OPENAI_API_KEY is not set",
    ):
        Providers(config, {})


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    providers = Providers(load_config(write(tmp_path, EXAMPLE), ENV), ENV)
    text = (
        repr(providers.providers)
        + repr([p.credentials for p in providers])
        + repr(providers.resolve("smart"))
    )
    for secret in (*ENV.values(), "sk-literal-second"):
        assert secret not in text
    assert "openai#1" in repr(providers.providers["openai"].credentials)


def test_model_addressing(tmp_path: Path) -> None:
    providers = Providers(load_config(write(tmp_path, EXAMPLE), ENV), ENV)
    assert [t.name for t in providers.resolve("openai/gpt-4.1")] == ["openai/gpt-4.1"]
    assert [t.name for t in providers.resolve("claude/claude-opus-4")] == ["claude/claude-opus-4"]
    assert [t.name for t in providers.resolve("gemini-2.5-flash")] == ["gemini/gemini-2.5-flash"]
    assert [t.name for t in providers.resolve("smart")] == [
        "claude/claude-sonnet-4-5",
        "openai/gpt-4.1",
    ]
    with pytest.raises(GatewayError) as info:
        providers.resolve("gpt-5")
    assert info.value.kind == "not_found" and "gpt-5" in info.value.message


def test_group_with_unknown_provider_fails_at_startup() -> None:
    config = parse_config(
        {
            "providers": {"a": {"protocol": "gemini", "base_url": "http://h"}},
            "groups": {"g": {"targets": ["b/x"]}},
        },
        {},
    )
    with pytest.raises(ConfigError, match=r"groups.g.targets\[0\]"):
        Providers(config, {})


def test_check_config_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = write(tmp_path, EXAMPLE)
    assert main(["check-config", str(good)]) == 0
    assert "ok (3 providers, 1 groups)" in capsys.readouterr().out
    bad = write(tmp_path, '[server]\nport = "x"', "bad.toml")
    assert main(["check-config", str(bad)]) == 2
    assert "server.port" in capsys.readouterr().err


def test_serve_refuses_public_address_without_inbound_keys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "refusing to listen on 0.0.0.0" in capsys.readouterr().err
