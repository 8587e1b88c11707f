"""``asgi-rotator serve`` and ``asgi-rotator check-config``."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from .config import Config, ConfigError, config_from_env, load_config
from .stack import build_app, with_mock_providers

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asgi-rotator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway under uvicorn")
    serve.add_argument("--config", help="TOML or JSON configuration file")
    serve.add_argument("--host", help="address to listen on (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: server.port, 8080)")
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    args = parser.parse_args(argv)
    try:
        if args.command == "check-config":
            config = load_config(args.file)
            print(
                f"{args.file}: ok ({len(config.providers)} providers, {len(config.groups)} groups)"
            )
            return 0
        return _serve(args)
    except ConfigError as exc:
        print(f"asgi-rotator: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    config: Config = load_config(args.config) if args.config else config_from_env()
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    if not _is_loopback(host) and not config.server.inbound_keys:
        print(
            f"asgi-rotator: refusing to listen on {host} without server.inbound_keys; "
            "set keys or listen on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    note = ""
    if not config.providers:
        config = with_mock_providers(config)
        note = " — no providers configured, serving the built-in mock provider (no API keys needed)"
    app = build_app(config, environ=os.environ)
    import uvicorn

    print(
        f"asgi-rotator listening on http://{host}:{port} with providers: {', '.join(config.providers)}{note}",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
