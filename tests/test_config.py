from __future__ import annotations

import json
from pathlib import Path

import pytest

from asgi_rotator.cli import main
from asgi_rotator.config import (
    Config,
    ConfigError,
    ProviderConfig,
    config_from_env,
    load_config,
    parse_config,
)
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
        ('[server]\nport = "eighty"', 'server.port: expected an integer, got a string ("eighty")'),
        (
            '[providers.x]\nprotocol = "openai_chat"\nbase_url = "http://h"\ntimeout = "fast"',
            'providers.x.timeout: expected a number, got a string ("fast")',
        ),
        (
            '[providers.x]\nprotocol = "smoke_signals"\nbase_url = "http://h"',
            "providers.x.protocol: unknown protocol 'smoke_signals'",
        ),
        ('[providers.x]\nbase_url = "http://h"', "providers.x: needs `protocol`"),
        (
            '[providers.x]\nprotocol = "gemini"\nbase_url = "http://h"\nkye = []',
            "providers.x.kye: unknown field; known fields here: preset, protocol",
        ),
        (
            "[groups.g]\ntargets = [42]",
            "groups.g.targets[0]: expected a string or a table, got an integer (42)",
        ),
        ("[server\n", "not valid TOML"),
    ],
)
def test_errors_name_the_path_and_value(tmp_path: Path, snippet: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, snippet), {})
    assert expected in str(info.value)


# Each broken configuration with the line check-config and serve must print for it. Every
# value here was once accepted by check-config, or crashed serve, or printed a secret.
PROVIDER = '[providers.p]\nprotocol = "gemini"\nbase_url = "http://h"\nmodels = ["m"]\n'
BROKEN = [
    (
        '[cooldown]\nrotation = "random"',
        "cooldown.rotation: 'random' is not one of round_robin, fair_cycle, priority, least_used",
    ),
    (
        '[providers.p]\npreset = "openai"\nrotation = "lru"',
        "providers.p.rotation: 'lru' is not one of",
    ),
    ("[server]\nmax_body_bytes = -1", "server.max_body_bytes: must be greater than 0, got -1"),
    ("[server]\nport = 99999", "server.port: must be between 1 and 65535, got 99999"),
    ("[server]\nport = 0", "server.port: must be between 1 and 65535, got 0"),
    ("[stream]\nttfb_timeout = 0", "stream.ttfb_timeout: must be greater than 0, got 0"),
    ("[stream.overrides.p]\nstal_timeout = 5", "stream.overrides.p.stal_timeout: unknown key"),
    ("[cooldown]\nmax_attempts = 0", "cooldown.max_attempts: must be greater than 0, got 0"),
    ('[routing]\nfallback_on = ["flaky"]', "routing.fallback_on[0]: unknown error kind 'flaky'"),
    ('[state]\nbackend = "sqlite"', "state.backend: 'sqlite' is not one of memory, file, redis"),
    ('[providers.p]\npreset = "openai"\nauth = "basic"', "providers.p.auth: 'basic' is not one of"),
    (
        '[server]\nupstream_client = "requests"',
        "server.upstream_client: 'requests' is not one of auto",
    ),
    (
        PROVIDER + '[groups.g]\ntargets = ["b/x"]',
        "groups.g.targets[0]: 'b/x' is not 'provider/model'",
    ),
    (PROVIDER + "[groups.g]\ntargets = []", "groups.g.targets: must not be empty"),
    (
        PROVIDER + '[groups.g]\ntargets = ["p/m"]\ncontext_fallbacks = ["q/m"]',
        "groups.g.context_fallbacks[0]: 'q/m' is not 'provider/model'",
    ),
    (PROVIDER + '[aliases]\nfast = "nowhere/m"', "aliases.fast: 'nowhere/m' is not"),
    ('[server]\ninbound_keys = [""]', "server.inbound_keys[0]: must not be empty or blank"),
    ('[server]\ninbound_keys = [" "]', "server.inbound_keys[0]: must not be empty or blank"),
    (PROVIDER + 'keys = ["  "]', "providers.p.keys[0]: must not be empty or blank"),
    (
        '[providers.p]\npreset = "openai"\nkeys = ["env:"]',
        "providers.p.keys[0]: empty variable name",
    ),
]


@pytest.mark.parametrize(("snippet", "expected"), BROKEN)
def test_check_config_names_each_broken_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], snippet: str, expected: str
) -> None:
    path = write(tmp_path, snippet)
    assert main(["check-config", str(path)]) == 2
    out = capsys.readouterr()
    assert expected in out.err and not out.out
    assert "Traceback" not in out.err
    # serve refuses the same file with the same line, before anything is built or bound.
    assert main(["serve", "--config", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_every_mistake_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        '[server]\nport = 99999\nmax_body_bytes = -1\n[cooldown]\nrotation = "random"\n'
        '[providers.p]\nprotocol = 5\nbase_url = "http://h"\n[stream]\nstall_timeout = "x"',
    )
    assert main(["check-config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2] for line in lines] == [
        "providers.p.protocol",
        "stream.stall_timeout",
        "server.port",
        "server.max_body_bytes",
        "cooldown.rotation",
    ]
    # The misshapen protocol is reported once, not again as "needs `protocol`".
    assert not any("needs" in line for line in lines)


def test_check_config_resolves_environment_references(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY_2", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "   ")
    assert main(["check-config", "examples/gateway.toml"]) == 2
    err = capsys.readouterr().err
    for line in (
        "providers.openai.keys[0]: environment variable OPENAI_API_KEY is not set",
        "providers.claude.keys[0]: environment variable ANTHROPIC_API_KEY is not set",
        "providers.claude.keys[1]: environment variable ANTHROPIC_API_KEY_2 is not set",
        "providers.gemini.keys[0]: environment variable GEMINI_API_KEY is empty or blank",
    ):
        assert line in err
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY_2", "GEMINI_API_KEY"):
        monkeypatch.setenv(name, f"sk-{name.lower()}")
    assert main(["check-config", "examples/gateway.toml"]) == 0
    assert "ok (3 providers, 1 groups)" in capsys.readouterr().out


def test_an_environment_override_is_named_as_the_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASGI_ROTATOR__SERVER__PORT", "abc")
    path = write(tmp_path, "[server]\nport = 8080")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        'ASGI_ROTATOR__SERVER__PORT: server.port: expected an integer, got a string ("abc")' in err
    )
    assert str(path) not in err


SECRET = "sk-canary-5f3a9e"


@pytest.mark.parametrize(
    ("snippet", "env", "expected"),
    [
        (
            PROVIDER + f'keys = "{SECRET}"',
            {},
            "providers.p.keys: expected an array, got a string of 16 characters (not shown",
        ),
        (
            PROVIDER + f'keys = [["{SECRET}"]]',
            {},
            "providers.p.keys[0]: expected a string, got an array",
        ),
        (f'[server]\ninbound_keys = "{SECRET}"', {}, "server.inbound_keys: expected an array"),
        (
            f'[state]\nbackend = "redis"\nurl = ["redis://:{SECRET}@127.0.0.1:6379/0"]',
            {},
            "state.url: expected a string, got an array of 1 item (not shown",
        ),
        (PROVIDER + f'headers = {{x-key = 7, y = "{SECRET}"}}', {}, "providers.p.headers.x-key"),
        (
            PROVIDER,
            {"ASGI_ROTATOR__PROVIDERS__P__KEYS": SECRET},
            "ASGI_ROTATOR__PROVIDERS__P__KEYS: providers.p.keys: expected an array",
        ),
    ],
)
def test_config_errors_never_print_a_secret(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    snippet: str,
    env: dict[str, str],
    expected: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = write(tmp_path, snippet)
    for command in (["check-config", str(path)], ["serve", "--config", str(path)]):
        assert main(command) == 2
        out = capsys.readouterr()
        assert expected in out.err
        assert SECRET not in out.err + out.out


def test_cli_port_out_of_range_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--port", "99999"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "expected a port from 1 to 65535, got '99999'" in err and "Traceback" not in err


def test_config_allowed_values_are_the_layers_own() -> None:
    from asgi_rotator import config_check
    from asgi_rotator.middleware import cooldown
    from asgi_rotator.upstream import CLIENTS

    assert config_check.ROTATIONS == cooldown.ROTATIONS
    assert config_check.RATE_LIMIT_SCOPES == cooldown.RATE_LIMIT_SCOPES
    assert set(config_check.UPSTREAM_CLIENTS) == {"auto", *CLIENTS}


def test_environment_overrides() -> None:
    env = {"ASGI_ROTATOR__SERVER__PORT": "9001", "ASGI_ROTATOR__PROVIDERS__LOCAL__PRESET": "ollama"}
    config = parse_config({"server": {"port": 1}}, env)
    assert config.server.port == 9001
    assert config.providers["local"].preset == "ollama"


@pytest.mark.parametrize("name", ["gateway.toml", "gateway.json"])
def test_a_file_nested_too_deeply_is_a_config_error(tmp_path: Path, name: str) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    text = f'{{"server": {{"host": {deep}}}}}' if name.endswith(".json") else f"a = {deep}"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text, name), {})
    assert str(info.value) == f"{tmp_path / name}: nested too deeply"


def test_an_override_nested_too_deeply_is_taken_as_text_like_any_non_json() -> None:
    deep = "[" * 10_000 + "]" * 10_000
    config = parse_config({}, {"ASGI_ROTATOR__SERVER__HOST": deep})
    assert config.server.host == deep


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
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
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


def test_a_plain_install_serves() -> None:
    from importlib.metadata import requires

    core = [r for r in requires("asgi-rotator") or [] if "extra ==" not in r]
    assert any(r.startswith("uvicorn") for r in core)


def test_serve_without_uvicorn_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "asgi-rotator: serve needs uvicorn: pip install uvicorn\n"


@pytest.mark.parametrize(
    ("layer", "section", "leave_out"),
    [
        ("StreamGuard", "stream", {"max_event_bytes"}),
        ("CooldownRetry", "cooldown", set()),
        ("FallbackRouter", "routing", set()),
        ("ResponsesState", "responses", set()),
    ],
)
def test_a_layer_alone_has_the_defaults_of_its_config_section(
    layer: str, section: str, leave_out: set[str]
) -> None:
    """A layer composed by hand behaves as the configured stack does when nothing is
    configured: every option its section has defaults to the section's value."""
    import inspect

    from asgi_rotator import middleware

    defaults = getattr(Config(), section)
    parameters = inspect.signature(getattr(middleware, layer)).parameters
    options = set(defaults.__struct_fields__) - {"enabled"} - leave_out
    for name in sorted(options):
        default = parameters[name].default
        configured = getattr(defaults, name)
        if configured is None or configured == {}:
            assert default is None, name  # "none configured" is the layer's own default
        else:
            assert default == configured or tuple(default) == tuple(configured), name


def test_the_request_log_alone_has_the_defaults_of_the_logging_section() -> None:
    """RequestLog (and the UsageTotals it is given) composed by hand logs and keeps totals as
    the configured stack does when [logging] is not configured: no file, no totals, and
    totals kept for the section's ``totals_days``."""
    import inspect

    from asgi_rotator.middleware import RequestLog
    from asgi_rotator.usage_totals import UsageTotals

    defaults = Config().logging
    layer = inspect.signature(RequestLog).parameters
    # Each option of the section, and the keyword that takes it (a new option goes here).
    keyword_of = {
        "requests": layer["path"],
        "totals": layer["totals"],
        "totals_days": inspect.signature(UsageTotals).parameters["ttl_days"],
    }
    assert set(keyword_of) == set(defaults.__struct_fields__)
    # "none configured" is the layer's own default: no file, and no UsageTotals (totals off)
    assert defaults.requests is None and keyword_of["requests"].default is None
    assert defaults.totals is False and keyword_of["totals"].default is None
    assert keyword_of["totals_days"].default == defaults.totals_days


def test_the_limits_of_the_core_modules_are_the_configs_defaults() -> None:
    import inspect

    from asgi_rotator import ProviderDispatch
    from asgi_rotator.middleware.tracing import Tracing
    from asgi_rotator.upstream import make_client

    parameters = inspect.signature(ProviderDispatch).parameters
    assert parameters["max_body"].default == Config().server.max_body_bytes
    assert parameters["max_event"].default == Config().stream.max_event_bytes
    client = inspect.signature(make_client).parameters
    provider = ProviderConfig()
    for name in ("timeout", "connect_timeout", "max_connections"):
        assert client[name].default == getattr(provider, name), name
    tracing = inspect.signature(Tracing).parameters
    assert tracing["max_content_bytes"].default == Config().tracing.max_content_bytes
