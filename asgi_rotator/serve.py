"""``asgi-rotator serve``: the gateway under uvicorn, operated like a server.

Deliberate choices:

* The port is bound here, before uvicorn starts, so "listening on ..." is printed only once
  it is true (connections made from then on wait in the listen backlog), and a busy port is
  one line and exit status 1 rather than a traceback from deep inside the event loop.
* ``--workers N`` runs N processes on that one socket (uvicorn's supervisor).  Each worker
  builds its own stack from the same configuration; the memory state store is then per
  worker (cooldowns, stored responses), and ``state.backend = "redis"`` shares it.
* One logging setup for the gateway's loggers and uvicorn's, in text or JSON lines
  (``--log-format json``, one object per line with the request fields flattened in, for
  log shippers).  The access log is off by default; when on, a query string's ``key``
  (where Gemini clients put their API key) is written as ``***``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import inspect
import json
import logging
import os
import socket
import sys
from typing import Any
from urllib.parse import parse_qsl, urlencode

from .config import Config, ConfigError, config_from_env, load_config
from .stack import Gateway, build_app, with_mock_providers
from .telemetry import export_problem

__all__ = [
    "JsonFormatter",
    "RedactQuery",
    "add_arguments",
    "build",
    "logging_config",
    "run",
    "worker_app",
]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")
# What a worker process reads to build the same stack as its parent (``--workers``).
_CONFIG_VARIABLE = "ASGI_ROTATOR_SERVE_CONFIG"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--config", help="TOML or JSON configuration file")
    serve.add_argument("--host", help="address to listen on (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port (default: server.port, 8080)")
    serve.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="warning",
        help="warning (default): a line per failed or failed-over request; info: a line per "
        "request",
    )
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="uvicorn's access log, one line per HTTP request (default: off)",
    )
    serve.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="text (default) or json lines"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default 1); the memory state store is per worker, "
        "state.backend = redis shares state between them",
    )


def run(args: argparse.Namespace) -> int:
    """``asgi-rotator serve`` with parsed arguments; the process's exit status."""
    if args.workers < 1:
        print(f"asgi-rotator: --workers must be at least 1, not {args.workers}", file=sys.stderr)
        return 2
    config, note = _load(args.config)
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    if not _is_loopback(host) and not config.server.inbound_keys:
        print(
            f"asgi-rotator: refusing to listen on {host} without server.inbound_keys; "
            "set keys or listen on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    problem = export_problem(config.tracing, os.environ)
    if problem is not None:
        print(f"asgi-rotator: {problem}; serving without tracing export", file=sys.stderr)
    try:
        import uvicorn
    except ImportError:  # a core dependency, but an environment may have lost it
        print("asgi-rotator: serve needs uvicorn: pip install uvicorn", file=sys.stderr)
        return 2

    # Built before the port is bound: a layer refusing its configuration is a configuration
    # error said first, not after "listening".  With workers each builds its own; this one
    # only checks, and holds nothing open (clients and stores connect on first use).
    app = build(config)
    if args.workers > 1:
        asyncio.run(app.aclose())
    log_config = logging_config(args.log_level, args.log_format, access_log=args.access_log)
    try:
        sock = _bind(host, port)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        print(f"asgi-rotator: cannot listen on {host}:{port}: {reason}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    workers = ""
    if args.workers > 1:
        workers = f", {args.workers} workers"
        if config.state.backend == "memory":
            workers += " (memory state store: per worker; state.backend = redis shares it)"
    print(
        f"asgi-rotator listening on http://{shown}:{port}{workers} "
        f"with providers: {', '.join(config.providers)}{note}",
        flush=True,
    )
    common: dict[str, Any] = {
        "lifespan": "on",
        "log_config": log_config,
        "log_level": None,  # the levels are in log_config, the access logger's at info
        "access_log": args.access_log,
    }
    if args.workers == 1:
        from .cli import tune_gc

        tune_gc()
        server = uvicorn.Server(uvicorn.Config(app, **common))
        server.run(sockets=[sock])
        return 0
    # Each worker is a fresh process that imports the app: it builds the stack from the same
    # configuration file (or environment) the parent read.
    os.environ[_CONFIG_VARIABLE] = args.config or ""
    uvicorn_config = uvicorn.Config(
        "asgi_rotator.serve:worker_app", factory=True, workers=args.workers, **common
    )
    from uvicorn.supervisors import Multiprocess

    # uvicorn >= 0.34 starts the workers itself; before, it took their target.
    if "target" in inspect.signature(Multiprocess).parameters:
        target = uvicorn.Server(uvicorn_config).run
        Multiprocess(uvicorn_config, target=target, sockets=[sock]).run()  # type: ignore[call-arg]
    else:
        Multiprocess(uvicorn_config, sockets=[sock]).run()
    return 0


def worker_app() -> Any:
    """The app of one ``--workers`` process (a uvicorn factory)."""
    from .cli import tune_gc

    config, _ = _load(os.environ.get(_CONFIG_VARIABLE) or None)
    app = build(config)
    tune_gc()
    return app


def build(config: Config) -> Gateway:
    """The stack ``serve`` runs.  The configuration was checked already; a layer refusing
    its arguments all the same is still a configuration mistake, said in one line."""
    try:
        return build_app(config, environ=os.environ)
    except ValueError as exc:  # ConfigError included
        raise ConfigError(str(exc)) from None


def _load(path: str | None) -> tuple[Config, str]:
    config: Config = (
        load_config(path, os.environ, check_secrets=True) if path else config_from_env()
    )
    if config.providers:
        return config, ""
    note = " — no providers configured, serving the built-in mock provider (no API keys needed)"
    return with_mock_providers(config), note


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return port


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As uvicorn does: a restart may bind while the old sockets sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)  # the workers serve on it
    return sock


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- logging ------------------------------------------------------------------------------


def logging_config(level: str, fmt: str = "text", *, access_log: bool = False) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the gateway's loggers and uvicorn's."""
    level = level.upper()
    formatter: dict[str, Any] = (
        {"()": "asgi_rotator.serve.JsonFormatter"} if fmt == "json" else {"format": _TEXT_FORMAT}
    )
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "stream": "ext://sys.stderr",
        "filters": ["redact_query", "redact_secrets"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "redact_query": {"()": "asgi_rotator.serve.RedactQuery"},
            # Every secret the gateway holds, from every logger's lines (uvicorn's included).
            "redact_secrets": {"()": "asgi_rotator.redaction.RedactingFilter"},
        },
        # uvicorn's Config writes use_colors into these two when it is set; never here.
        "formatters": {"default": formatter, "access": formatter},
        "handlers": {"default": handler},
        "loggers": {
            "asgi_rotator": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            # At info whatever --log-level says: the access log is asked for on its own.
            "uvicorn.access": {
                "handlers": ["default"] if access_log else [],
                "level": "INFO",
                "propagate": False,
            },
        },
    }


class RedactQuery(logging.Filter):
    """uvicorn's access record carries the full path, query string included, in its
    arguments (client, method, path, HTTP version, status): a ``key`` there is a Gemini
    client's API key, written as ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            path = args[2]
            if isinstance(path, str) and "?" in path:
                base, _, query = path.partition("?")
                pairs = parse_qsl(query, keep_blank_values=True)
                if any(name == "key" for name, _ in pairs):
                    cleaned = [(n, "***" if n == "key" else v) for n, v in pairs]
                    record.args = (*args[:2], f"{base}?{urlencode(cleaned, safe='*')}", *args[3:])
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a request log line's
    fields (``record.request``) flattened in."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = getattr(record, "request", None)
        if isinstance(request, dict):
            out.update(request)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)
