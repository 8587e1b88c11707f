"""``asgi-rotator serve``, ``asgi-rotator check-config`` and ``asgi-rotator usage``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys

from . import serve as serving
from .config import ConfigError, config_from_env, load_config

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asgi-rotator", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway under uvicorn")
    serve.add_argument("--version", action="version", version=_version())
    serving.add_arguments(serve)  # the options live with the serving logic
    check = commands.add_parser(
        "check-config",
        help="validate a configuration file as serve would (environment included), "
        "naming every mistake",
    )
    check.add_argument("file")
    usage = commands.add_parser("usage", help="usage and cost totals by key, model and day")
    usage.add_argument("--config", help="TOML or JSON configuration file (its [state] store)")
    usage.add_argument("--day", action="append", help="a UTC day, YYYY-MM-DD (repeatable)")
    usage.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    try:
        if args.command == "check-config":
            return _check_config(args.file)
        if args.command == "usage":
            from .usage_totals import print_usage

            config = load_config(args.config) if args.config else config_from_env()
            return print_usage(config, days=args.day, as_json=args.json)
        return _serve(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"asgi-rotator: {problem}", file=sys.stderr)
        return 2


def _check_config(path: str) -> int:
    config = load_config(path, os.environ, check_secrets=True)
    gateway = serving.build(config)  # what serve would build: providers, stores, every layer
    asyncio.run(gateway.aclose())
    print(f"{path}: ok ({len(config.providers)} providers, {len(config.groups)} groups)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    return serving.run(args)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"asgi-rotator {version('asgi-rotator')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        from . import __version__

        return f"asgi-rotator {__version__}"


# Tracked objects allocated, net, before the youngest generation is collected (default 700).
GC_THRESHOLD = 20_000


def tune_gc() -> None:
    """Set the garbage collector up for a long-running server, as ``serve`` does.

    Requests are freed by reference counting, so the collector has nothing to find in them,
    yet it would keep looking:

    * Each request keeps a few hundred tracked objects alive across its awaits (coroutines,
      messages, the exchange), so a handful of requests in flight take the young
      generation's count past the default 700 all the time: under load the collector ran
      every few requests and never found any garbage.  At 20,000 it runs rarely.
    * Those in-flight objects survive into the oldest generation, and every few seconds
      they trigger a full collection that walks the whole heap, a pause felt by every
      request in flight.  ``gc.freeze()`` after startup leaves the modules, the
      configuration and the built stack out of those walks.

    Cyclic garbage is still collected, only later, and 20,000 young objects are a few
    megabytes at most.  A host that embeds the gateway owns its process's collector and
    may call this from its own startup."""
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, gen1, gen2)


if __name__ == "__main__":
    raise SystemExit(main())
