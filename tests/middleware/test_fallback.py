"""FallbackRouter with a hand-built scope, a scripted inner app and a recording send."""

from __future__ import annotations

import json
from typing import Any

import pytest

from asgi_rotator.errors import GatewayError
from asgi_rotator.exchange import SCOPE_KEY
from asgi_rotator.middleware.cooldown import CooldownRetry
from asgi_rotator.middleware.fallback import FallbackRouter
from asgi_rotator.providers import Providers
from asgi_rotator.state import MemoryStore
from tests.middleware.test_cooldown import (
    NOTHING,
    Clock,
    Outcome,
    Upstream,
    call,
    make_providers,
    rate_limited,
)

pytestmark = pytest.mark.anyio

GROUPS = {
    "g": {
        "targets": [
            "p/a",
            {"target": "q/b", "params": {"max_tokens": 64, "temperature": 0.1, "top_logprobs": 2}},
            "r/c",
        ]
    }
}


def providers(groups: dict[str, Any] | None = None) -> Providers:
    return make_providers({"p": 1, "q": 1, "r": 1, "s": 1}, groups=groups or GROUPS)


def router(script: Any, groups: dict[str, Any] | None = None, **kw: Any) -> tuple[Any, Upstream]:
    upstream = Upstream(script)
    return FallbackRouter(upstream, providers=providers(groups), **kw), upstream


def failing(**by_target: Outcome) -> Any:
    return lambda target, key, n: by_target.get(target, "ok")


@pytest.mark.parametrize(
    "error",
    [
        rate_limited(3),
        GatewayError("server_error", "boom", status=500),
        GatewayError("overloaded", "Overloaded", status=529),
        GatewayError("timeout", "no first byte in 30s"),
        GatewayError("connection", "connection refused"),
    ],
    ids=lambda e: e.kind,
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_retryable_failure_moves_on_to_the_next_target(
    error: GatewayError, stream: bool
) -> None:
    app, upstream = router(failing(**{"p/a": error}))
    result = await call(app, "g", stream=stream)
    assert result.status == 200
    assert [t for t, _ in upstream.calls] == ["p/a", "q/b"]
    assert result.attempts == 2
    assert result.exchange is not None and result.exchange.current.target.name == "q/b"
    assert result.exchange.current.error is None


async def test_error_event_after_a_200_still_falls_back() -> None:
    busy = GatewayError("overloaded", "Overloaded", status=529)
    app, upstream = router(failing(**{"p/a": ("inband", busy)}))
    result = await call(app, "g", stream=True)
    assert result.status == 200 and result.body == b"starthellofin"
    assert [t for t, _ in upstream.calls] == ["p/a", "q/b"]


async def test_nothing_is_retried_after_commit() -> None:
    app, upstream = router(failing(**{"p/a": ("late", GatewayError("server_error", "cut"))}))
    result = await call(app, "g", stream=True)
    assert result.status == 200 and result.body == b"starthelloerror"
    assert len(upstream.calls) == 1


@pytest.mark.parametrize("kind", ["bad_request", "auth", "not_found"])
async def test_errors_that_would_fail_everywhere_are_answered_at_once(kind: str) -> None:
    app, upstream = router(failing(**{"p/a": GatewayError(kind, "no")}))  # type: ignore[arg-type]
    result = await call(app, "g")
    assert result.status in (400, 401, 404) and len(upstream.calls) == 1
    assert result.json()["error"]["message"] == "no"


async def test_params_apply_to_their_target_only() -> None:
    app, upstream = router(failing(**{"p/a": rate_limited(), "q/b": rate_limited()}))
    result = await call(app, "g")
    assert result.status == 200
    first, second, third = upstream.requests
    assert (first.max_tokens, first.temperature) == (None, None)
    assert (second.max_tokens, second.temperature) == (64, 0.1)
    assert second.extra == {**first.extra, "top_logprobs": 2}
    assert (third.max_tokens, third.temperature) == (None, None)
    assert "top_logprobs" not in first.extra and third.extra == first.extra
    assert result.exchange is not None and result.exchange.request is not None
    assert result.exchange.request.model == "g"


async def test_a_group_member_is_tried_first_then_the_rest_of_its_group() -> None:
    app, upstream = router(failing(**{"r/c": rate_limited(), "p/a": rate_limited()}))
    result = await call(app, "r/c")
    assert result.status == 200
    assert [t for t, _ in upstream.calls] == ["r/c", "p/a", "q/b"]
    assert upstream.requests[2].max_tokens == 64  # the group's params for q/b


async def test_a_model_outside_every_group_has_no_fallback() -> None:
    app, upstream = router(failing(**{"s/x": rate_limited(9)}))
    result = await call(app, "s/x")
    assert result.status == 429 and result.headers[b"retry-after"] == b"9"
    assert len(upstream.calls) == 1


async def test_an_alias_of_a_group_is_the_group() -> None:
    providers_ = make_providers({"p": 1, "q": 1, "r": 1}, groups=GROUPS)
    providers_.config.aliases["smart"] = "g"
    upstream = Upstream(failing(**{"p/a": rate_limited()}))
    result = await call(FallbackRouter(upstream, providers=providers_), "smart")
    assert result.status == 200 and [t for t, _ in upstream.calls] == ["p/a", "q/b"]


async def test_context_window_errors_go_to_the_context_fallbacks() -> None:
    groups = {"g": {"targets": ["p/a", "q/b"], "context_fallbacks": ["r/long", "s/longer"]}}
    too_long = GatewayError("context_window_exceeded", "prompt is too long")
    app, upstream = router(failing(**{"p/a": too_long, "r/long": too_long}), groups)
    result = await call(app, "g")
    assert result.status == 200
    assert [t for t, _ in upstream.calls] == ["p/a", "r/long", "s/longer"]
    assert result.exchange is not None
    assert [p.data["reason"] for p in result.exchange.passes if p.name == "fallback.switch"] == [
        "context_window_exceeded"
    ]


async def test_content_filter_errors_go_to_the_content_fallbacks() -> None:
    groups = {"g": {"targets": ["p/a", "q/b"], "content_fallbacks": ["s/lenient"]}}
    filtered = GatewayError("content_filtered", "flagged by the content policy")
    app, upstream = router(failing(**{"p/a": filtered}), groups)
    result = await call(app, "g")
    assert result.status == 200 and [t for t, _ in upstream.calls] == ["p/a", "s/lenient"]


async def test_context_error_without_context_fallbacks_is_answered() -> None:
    too_long = GatewayError("context_window_exceeded", "prompt is too long")
    app, upstream = router(failing(**{"p/a": too_long}))
    result = await call(app, "g")
    assert result.status == 400 and len(upstream.calls) == 1
    assert result.json()["error"]["message"] == "prompt is too long"


async def test_all_rate_limited_is_a_429_with_the_earliest_retry_after() -> None:
    app, _ = router(
        failing(**{"p/a": rate_limited(30), "q/b": rate_limited(12), "r/c": rate_limited()})
    )
    result = await call(app, "g")
    assert result.status == 429 and result.headers[b"retry-after"] == b"12"
    assert result.attempts == 3
    message = result.json()["error"]["message"]
    assert message == (
        "all 3 targets failed: p/a: rate_limited (429); q/b: rate_limited (429); "
        "r/c: rate_limited (429)"
    )


@pytest.mark.parametrize(
    ("errors", "status"),
    [
        (["timeout", "timeout", "timeout"], 504),
        (["rate_limited", "server_error", "timeout"], 503),
        (["overloaded", "connection", "server_error"], 503),
        (["server_error", "connection", "timeout"], 502),
    ],
)
async def test_all_failed_status_reflects_the_causes(errors: list[str], status: int) -> None:
    script = {t: GatewayError(k, "x") for t, k in zip(["p/a", "q/b", "r/c"], errors, strict=True)}  # type: ignore[arg-type]
    app, _ = router(failing(**script))
    result = await call(app, "g")
    assert result.status == status
    assert result.exchange is not None and result.exchange.current.error is not None
    assert result.exchange.current.error.status == status


async def test_all_failed_message_names_no_secret() -> None:
    leaky = GatewayError("server_error", "upstream said: bad key k-p-0", status=500)
    app, _ = router(lambda t, key, n: leaky)
    result = await call(app, "g")
    assert result.status == 502
    assert b"k-p-0" not in result.body and b"p/a: server_error (500)" in result.body


async def test_last_error_of_a_single_target_is_answered_as_it_came() -> None:
    app, _ = router(failing(**{"s/x": GatewayError("overloaded", "Overloaded", status=529)}))
    result = await call(
        app,
        "s/x",
        body={"model": "s/x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        path="/v1/messages",
    )
    assert result.status == 529 and result.json()["error"]["type"] == "overloaded_error"


async def test_fallback_on_is_configurable() -> None:
    app, upstream = router(
        failing(**{"p/a": GatewayError("auth", "bad key")}), fallback_on=["auth", "rate_limited"]
    )
    assert (await call(app, "g")).status == 200 and len(upstream.calls) == 2
    app, upstream = router(failing(**{"p/a": rate_limited()}), fallback_on=["auth"])
    assert (await call(app, "g")).status == 429 and len(upstream.calls) == 1


async def test_unknown_model_is_not_found_in_the_clients_protocol() -> None:
    app, upstream = router(lambda t, k, n: "ok")
    result = await call(
        app,
        "nope",
        path="/v1/messages",
        body={"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert result.status == 404 and result.json()["type"] == "error" and upstream.calls == []
    assert result.attempts == 0


async def test_with_cooldown_below_every_key_is_tried_before_moving_on() -> None:
    clock = Clock()
    prov = make_providers({"p": 2, "q": 1}, groups={"g": {"targets": ["p/a", "q/b"]}})
    upstream = Upstream(lambda t, key, n: rate_limited(60) if t == "p/a" else "ok")
    cooldown = CooldownRetry(
        upstream, providers=prov, store=MemoryStore(), clock=clock, sleep=clock.sleep
    )
    app = FallbackRouter(cooldown, providers=prov)
    result = await call(app, "g")
    assert result.status == 200 and result.attempts == 3
    assert upstream.calls == [("p/a", "p#0"), ("p/a", "p#1"), ("q/b", "q#0")]
    assert result.exchange is not None
    assert [(a.provider, a.credential) for a in result.exchange.attempts] == [
        ("p", "p#0"),
        ("p", "p#1"),
        ("q", "q#0"),
    ]
    # Both p keys are cooling down: the next request skips p/a without calling it.
    upstream.calls.clear()
    result = await call(app, "g")
    assert result.status == 200 and upstream.calls == [("q/b", "q#0")] and result.attempts == 1
    assert clock.slept == []


async def test_works_alone_around_a_foreign_app() -> None:
    targets: list[str] = []

    async def foreign(scope: Any, receive: Any, send: Any) -> None:
        assert json.loads((await receive())["body"])["model"] == "g"
        target = scope[SCOPE_KEY].current.target
        targets.append(target.name)
        status = 429 if target.name == "p/a" else 200
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"retry-after", b"5")]}
        )
        await send({"type": "http.response.body", "body": b"from " + target.name.encode()})

    result = await call(FallbackRouter(foreign, providers=providers()), "g")
    assert result.status == 200 and result.body == b"from q/b" and targets == ["p/a", "q/b"]
    assert result.attempts == 2


async def test_passes_through_other_scopes_and_routes() -> None:
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    app = FallbackRouter(inner, providers=providers())
    await app({"type": "lifespan"}, NOTHING, NOTHING)
    await app({"type": "websocket", "path": "/"}, NOTHING, NOTHING)
    await app(
        {"type": "http", "method": "GET", "path": "/healthz", "headers": []}, NOTHING, NOTHING
    )
    assert seen == ["lifespan", "websocket", "http"]


@pytest.mark.parametrize(
    ("groups", "options"),
    [
        ({"g": {"targets": [{"target": "p/a", "params": {"max_tokens": "many"}}]}}, {}),
        ({"g": {"targets": [{"target": "p/a", "params": {"model": "other"}}]}}, {}),
        ({"g": {"targets": ["p/a"], "context_fallbacks": ["nowhere/x"]}}, {}),
        (GROUPS, {"fallback_on": ["rate_limited", "teapot"]}),
    ],
)
def test_configuration_is_validated_at_construction(
    groups: dict[str, Any], options: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        FallbackRouter(Upstream(), providers=providers(groups), **options)


async def test_plans_are_kept_per_model_name_and_stay_bounded() -> None:
    app, upstream = router(failing())
    for _ in range(2):  # the second time from the kept plan, the same targets
        assert (await call(app, "q/b")).status == 200
    assert [t for t, _ in upstream.calls] == ["q/b", "q/b"]
    for n in range(1100):
        assert (await call(app, f"s/m{n}")).status == 200
    assert len(app._plans) <= 1024
    # A name longer than any model's is refused where the request is parsed (400 naming
    # model, model_names.MAX_MODEL_NAME), before a plan is made for it.
    long_name = "s/" + "m" * 300
    assert (await call(app, long_name)).status == 400
    assert long_name not in app._plans


async def test_a_plan_failure_is_not_kept() -> None:
    app, _ = router(failing())
    assert (await call(app, "nowhere/x")).status == 404
    assert "nowhere/x" not in app._plans
