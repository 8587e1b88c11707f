"""What each arm serves: the bare passthrough floors and the asgi-rotator stack.

A floor is the least an ASGI gateway can do: read the body, send it to the upstream with the
same path, relay status, content type and each body chunk as it arrives.  No parsing, no
routing, no error shaping, and no watching for the client going away: a floor keeps an
abandoned upstream request running, which is why the harness restarts every arm after the
open-streams figure.  One per HTTP client library, using the library directly (not
through ``asgi_rotator.upstream``), so the floor measures the library and the server and
nothing of ours.

``python -m benchmarks.apps <app> --port N ...`` serves one of them (or the benchmark
upstream, or the OTLP receiver the tracing arm exports to) under uvicorn with the fastest installed loop and HTTP parser; the harness starts
one such process per arm.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import inspect
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FLOORS = ("httpx", "httpx2", "aiohttp")
_FORWARD = {b"content-type", b"authorization", b"x-api-key", b"anthropic-version"}
_HOP = {b"transfer-encoding", b"connection", b"keep-alive", b"content-length"}
MAX_CONNECTIONS = 1100  # above the open-streams figure's 500 streams


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        body += message.get("body", b"")
    return body


async def _lifespan(
    receive: Receive,
    send: Send,
    open_: Callable[[], None],
    close: Callable[[], Awaitable[None]],
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            open_()  # in the running loop, before the first request: no race to create it
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await close()
            await send({"type": "lifespan.shutdown.complete"})
            return


class HttpxFloor:
    """Bare passthrough over ``httpx`` or ``httpx2`` (``lib``)."""

    def __init__(self, upstream: str, lib: str = "httpx") -> None:
        self.upstream = upstream.rstrip("/")
        self.lib = __import__(lib)
        self.client: Any = None

    def open(self) -> None:
        lib = self.lib
        self.client = lib.AsyncClient(
            timeout=lib.Timeout(600, connect=10),
            limits=lib.Limits(
                max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
            ),
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self.open, self.close)
            return
        body = await _read_body(receive)
        client = self.client
        headers = [(k, v) for k, v in scope["headers"] if k in _FORWARD]
        request = client.build_request(
            scope["method"], self.upstream + scope["path"], headers=headers, content=body
        )
        response = await client.send(request, stream=True)
        try:
            out = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": out}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


class AiohttpFloor:
    """Bare passthrough over ``aiohttp``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: Any = None

    def open(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=600, sock_connect=10),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self.open, self.close)
            return
        body = await _read_body(receive)
        session = self.session
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k in _FORWARD
        ]
        response = await session.request(
            scope["method"], self.upstream + scope["path"], headers=headers, data=body
        )
        try:
            out = [(k, v) for k, v in response.raw_headers if k.lower() not in _HOP]
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            content = response.content
            while chunk := await content.readany():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            response.release()


class OtlpReceiver:
    """The collector's part for the tracing arm: takes every OTLP/HTTP export, decodes it
    (protobuf, as a collector must before it can do anything with it) and discards it,
    answering 200 with the empty response the spec asks for.  ``GET /stats`` says what
    arrived (spans, metric data points, exports, bytes), so the report can tell whether the
    gateway's batch processor dropped spans instead of exporting them."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.kinds: dict[str, tuple[Any, bytes]] = {
            "/v1/traces": (
                trace_service_pb2.ExportTraceServiceRequest,
                trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
            ),
            "/v1/metrics": (
                metrics_service_pb2.ExportMetricsServiceRequest,
                metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString(),
            ),
            "/v1/logs": (
                logs_service_pb2.ExportLogsServiceRequest,
                logs_service_pb2.ExportLogsServiceResponse().SerializeToString(),
            ),
        }
        self.stats = {"exports": 0, "bytes": 0, "spans": 0, "metric_points": 0, "rejected": 0}

    def _count(self, path: str, decoded: Any) -> None:
        if path == "/v1/traces":
            self.stats["spans"] += sum(
                len(scope.spans) for rs in decoded.resource_spans for scope in rs.scope_spans
            )
        elif path == "/v1/metrics":
            for rm in decoded.resource_metrics:
                for scope in rm.scope_metrics:
                    for metric in scope.metrics:
                        kind = metric.WhichOneof("data")
                        if kind is not None:
                            points = getattr(metric, kind).data_points
                            self.stats["metric_points"] += len(points)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        path = scope["path"]
        if scope["method"] == "GET" and path == "/stats":
            await _answer(send, 200, json.dumps(self.stats).encode(), b"application/json")
            return
        kind = self.kinds.get(path)
        try:
            if kind is None:
                raise ValueError(path)
            if (b"content-encoding", b"gzip") in scope["headers"]:
                body = gzip.decompress(body)
            decoded = kind[0].FromString(body)
        except Exception:
            self.stats["rejected"] += 1
            await _answer(send, 400, b"", b"text/plain")
            return
        self.stats["exports"] += 1
        self.stats["bytes"] += len(body)
        self._count(path, decoded)
        await _answer(send, 200, kind[1], b"application/x-protobuf")


async def _answer(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def stack_config(
    upstream: str,
    *,
    heartbeat: float | None = None,
    max_connections: int = MAX_CONNECTIONS,
    tracing: str | None = None,
) -> dict[str, Any]:
    """The gateway's configuration for every stack arm: one provider per upstream protocol
    the figures use (``chat/…`` same-protocol, ``messages/…`` translated for a Chat client),
    and an inbound key, as any gateway reachable beyond loopback has.  ``heartbeat``: the
    stream guard's heartbeat interval (the open-streams figure sets 1 s).  ``tracing``: an
    OTLP/HTTP endpoint, which turns the Tracing layer on as ``serve`` sets it up (batch span
    processor, periodic metric reader, both exporting there)."""
    upstream = upstream.rstrip("/")
    common = {"keys": ["bench-key"], "max_connections": max_connections}
    config: dict[str, Any] = {
        "server": {"inbound_keys": ["bench-key"]},
        "providers": {
            "chat": {"protocol": "openai_chat", "base_url": f"{upstream}/v1", **common},
            "messages": {"protocol": "anthropic_messages", "base_url": upstream, **common},
        },
    }
    if heartbeat is not None:
        config["stream"] = {"heartbeat_interval": heartbeat}
    if tracing is not None:
        config["tracing"] = {"endpoint": tracing}
    return config


def stack_layers() -> tuple[str, ...]:
    """The layers the stack can switch off one at a time: ``stack.LAYERS`` when
    ``build_app`` takes ``without=``, else none."""
    from asgi_rotator import stack

    if "without" not in inspect.signature(stack.build_app).parameters:
        return ()
    return tuple(getattr(stack, "LAYERS", ()))


def build_stack(
    upstream: str,
    client: str,
    without: frozenset[str] = frozenset(),
    *,
    heartbeat: float | None = None,
    max_connections: int = MAX_CONNECTIONS,
    tracing: str | None = None,
) -> Any:
    """The whole gateway through ``build_app``, with ``client`` as every provider's upstream
    client (set on the built providers until the configuration carries the choice)."""
    from asgi_rotator.config import parse_config
    from asgi_rotator.stack import build_app
    from asgi_rotator.upstream import make_client

    config = parse_config(
        stack_config(
            upstream, heartbeat=heartbeat, max_connections=max_connections, tracing=tracing
        ),
        {},
    )
    kwargs: dict[str, Any] = {"environ": {}}
    if without:
        kwargs["without"] = set(without)
    gateway = build_app(config, **kwargs)
    for provider in gateway.providers:
        provider.client = make_client(client, max_connections=max_connections)
    return gateway


def server_stack() -> tuple[str, str]:
    """uvicorn's HTTP parser and event loop: the fastest installed."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return http, loop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.apps")
    parser.add_argument(
        "app",
        help="upstream | floor-httpx | floor-httpx2 | floor-aiohttp | stack | otlp-receiver",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default="")
    parser.add_argument("--client", default="auto")
    parser.add_argument("--without", default="", help="comma-separated stack layers to leave out")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--pace", type=float, default=0.0)
    parser.add_argument("--heartbeat", type=float, help="stack: stream heartbeat interval (s)")
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS)
    parser.add_argument("--tracing", help="stack: the OTLP/HTTP endpoint to export traces to")
    args = parser.parse_args(argv)

    # Open streams need two descriptors each (client side and upstream side).
    from .many_streams import raise_open_files

    raise_open_files(2 * args.max_connections + 1024)

    app: Any
    if args.app == "upstream":
        from .upstream import BenchUpstream, harvest

        app = BenchUpstream(harvest(), latency=args.latency, pace=args.pace)
    elif args.app == "floor-aiohttp":
        app = AiohttpFloor(args.upstream)
    elif args.app.startswith("floor-"):
        app = HttpxFloor(args.upstream, args.app.removeprefix("floor-"))
    elif args.app == "stack":
        without = frozenset(filter(None, args.without.split(",")))
        app = build_stack(
            args.upstream,
            args.client,
            without,
            heartbeat=args.heartbeat,
            max_connections=args.max_connections,
            tracing=args.tracing,
        )
    elif args.app == "otlp-receiver":
        app = OtlpReceiver()
    else:
        parser.error(f"unknown app {args.app!r}")

    import uvicorn

    from asgi_rotator.cli import tune_gc

    tune_gc()  # every arm's process is set up as ``asgi-rotator serve`` sets up its own
    http, loop = server_stack()
    if loop == "asyncio":
        asyncio.set_event_loop_policy(None)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        http=http,
        loop=loop,
        lifespan="on",
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_keep_alive=120,
        timeout_graceful_shutdown=1,  # held streams must not delay a restart
    )
    os._exit(0)


if __name__ == "__main__":
    main()
