"""Instructions per request, counted: ``python -m benchmarks.instructions``.

Timings on a shared or virtual machine swing by a quarter between runs, and many virtual
machines expose no hardware counters.  Valgrind's cachegrind counts the instructions a
process executes, the same from run to run within a fraction of a percent, busy machine or
not.  Here it counts the in-process stack (``inprocess.py``: the whole stack called
directly, its upstream client answering from fixed bytes): one run with a few requests and
one with more, the difference divided by the extra requests, so that start-up, imports and
the first request's caches cancel out.

Hash randomisation is fixed (``PYTHONHASHSEED=0``) and bytecode is compiled before the
runs, or the first run would count the compiler.  What still moves between two versions of
the code is where the allocator puts things: differences under about 10,000 instructions
per request are within that noise.  Instructions are not time (a cache miss costs more than
an add), but for the same Python work on the same interpreter they follow it closely.

``--baseline DIR`` counts another checkout beside this one (``git worktree add DIR
<commit>``), from its own packages.

``--mode served`` counts what a served plain request costs the server's process, the way the
goal "CPU per plain request <= 2x the passthrough's" is put: the aiohttp passthrough
(``floor-aiohttp``) and the stack (aiohttp as its upstream client, as the floor's) each run
under valgrind in uvicorn, as ``python -m benchmarks`` serves them, and take one keep-alive
connection's plain requests from the harness's upstream, which runs outside valgrind.  The
server's start-up and shutdown cancel out of the difference between two runs, as above.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from benchmarks.run import checkout_dir, free_port, run_in_checkout, spawn, stop, wait_ready
from benchmarks.upstream import EVENTS

ROOT = Path(__file__).resolve().parent.parent
# Each mode: the model an OpenAI Chat client names (the benchmark config routes ``chat/`` to
# a Chat upstream and ``messages/`` to an Anthropic one) and whether it streams (40 events).
# A plain mode is counted per request, a streamed one per event.
MODES = {
    "plain": ("chat/bench", False),
    "translated-plain": ("messages/bench", False),
    "same": ("chat/bench", True),
    "translated": ("messages/bench", True),
}
FLOOR = "floor-aiohttp"
_VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]

# Run with the checkout's own packages: the stack, its canned upstream client, and the
# request bodies of ``benchmarks.inprocess`` (present since the first in-process figures).
_DRIVER = """
import sys
from benchmarks import inprocess
from benchmarks.apps import stack_config
from benchmarks.upstream import harvest
from asgi_rotator.config import parse_config
from asgi_rotator.stack import build_app

model, stream, count = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
canned = harvest()  # before the loop: it runs one of its own

async def main():
    gateway = build_app(parse_config(stack_config("http://upstream.invalid"), {}), environ={})
    client = inprocess.CannedClient(canned)
    for provider in gateway.providers:
        provider.client = client
    body = inprocess._body(model, stream)
    for _ in range(count):
        await inprocess._call(gateway, body)
    await gateway.aclose()

try:
    import uvloop
    uvloop.run(main())
except ImportError:
    import asyncio
    asyncio.run(main())
"""

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def parse_refs(output: str) -> int:
    """The instructions cachegrind counted, from its summary."""
    found = _REFS.search(output)
    if found is None:
        raise ValueError(f"no instruction count in valgrind's output: {output[-400:]!r}")
    return int(found.group(1).replace(",", ""))


def per_unit(first: int, second: int, extra_requests: int, events: int = 0) -> int:
    """Instructions per request (``events``: per event of a stream of that many)."""
    return round((second - first) / (extra_requests * (events or 1)))


def count(checkout: Path, mode: str, requests: int) -> int:
    """The instructions one run of ``requests`` requests executes, from start to exit."""
    model, stream = MODES[mode]
    completed = run_in_checkout(
        checkout,
        [*_VALGRIND, sys.executable, "-c", _DRIVER, model, "1" if stream else "0", str(requests)],
    )
    return parse_refs(completed.stderr)


def measure(checkout: Path, mode: str, requests: int, warm: int = 100) -> int:
    for package in ("asgi_rotator", "benchmarks"):
        compileall.compile_dir(checkout / package, quiet=1)
    first = count(checkout, mode, warm)
    second = count(checkout, mode, warm + requests)
    streamed = MODES[mode][1]
    return per_unit(first, second, requests, EVENTS if streamed else 0)


def _served_body() -> bytes:
    return json.dumps(
        {
            "model": "chat/bench",
            "messages": [{"role": "user", "content": "Say hello"}],
            "max_tokens": 16,
        }
    ).encode()


def served_count(checkout: Path, app: str, upstream: str, requests: int, logs: Path) -> int:
    """The instructions a server process (``app`` of ``benchmarks.apps``, from ``checkout``)
    executes from start to exit, having answered ``requests`` plain requests on one
    keep-alive connection."""
    port = free_port()
    argv = [*_VALGRIND, sys.executable, "-m", "benchmarks.apps", app, "--port", str(port)]
    argv += ["--upstream", upstream]
    if app == "stack":
        argv += ["--client", "aiohttp"]  # the floor's client
    log = logs / f"{app}-{requests}-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONHASHSEED": "0"}
    process = spawn(argv, log, env=env, cwd=str(checkout))
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log, timeout=600)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        headers = {"content-type": "application/json", "authorization": "Bearer bench-key"}
        body = _served_body()
        for _ in range(requests):
            connection.request("POST", "/v1/chat/completions", body, headers)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"{app}: {response.status} {answer[:300]!r}")
        connection.close()
    finally:
        # uvicorn shuts down on SIGINT and valgrind then writes its summary, which takes
        # longer than ``run.stop`` waits before it kills.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(300)
        finally:
            stop(process)
    return parse_refs(log.read_text(errors="replace"))


def measure_served(
    checkout: Path, app: str, upstream: str, requests: int, logs: Path, warm: int = 100
) -> int:
    for package in ("asgi_rotator", "benchmarks"):
        compileall.compile_dir(checkout / package, quiet=1)
    first = served_count(checkout, app, upstream, warm, logs)
    second = served_count(checkout, app, upstream, warm + requests, logs)
    return per_unit(first, second, requests)


def served(
    checkouts: dict[str, Path], requests: int, warm: int = 100
) -> dict[str, dict[str, float]]:
    """Per plain request, served: the floor's count, and each checkout's with its ratio."""
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="instructions-") as tmp:
        logs = Path(tmp)
        port = free_port()
        upstream_log = logs / "upstream.log"
        upstream = spawn(
            [sys.executable, "-m", "benchmarks.apps", "upstream", "--port", str(port)],
            upstream_log,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=str(ROOT),
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, upstream, upstream_log, timeout=120)
            floor = measure_served(ROOT, FLOOR, url, requests, logs, warm)
            out[FLOOR] = {"served_per_request": floor}
            print(f"{FLOOR:<14} served     {out[FLOOR]}", file=sys.stderr, flush=True)
            for name, checkout in checkouts.items():
                count = measure_served(checkout, "stack", url, requests, logs, warm)
                out[name] = {"served_per_request": count, "over_floor": round(count / floor, 3)}
                print(f"{name:<14} served     {out[name]}", file=sys.stderr, flush=True)
        finally:
            stop(upstream)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--mode", choices=(*MODES, "all", "served"), default="plain")
    parser.add_argument("--requests", type=int, help="extra requests counted (default 500)")
    parser.add_argument(
        "--baseline", type=checkout_dir, metavar="DIR", help="another checkout, counted beside"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    checkouts = {"asgi-rotator": ROOT}
    if args.baseline is not None:
        checkouts["baseline"] = args.baseline
    if args.mode == "served":
        print(json.dumps(served(checkouts, args.requests or 500)))
        return
    modes = MODES if args.mode == "all" else (args.mode,)
    out: dict[str, dict[str, int]] = {}
    for mode in modes:
        # Streams are 40 events each: fewer of them count as many instructions.
        streamed = MODES[mode][1]
        requests = args.requests or (100 if streamed else 500)
        for name, checkout in checkouts.items():
            out.setdefault(name, {})[f"{mode}_per_{'event' if streamed else 'request'}"] = measure(
                checkout, mode, requests
            )
            print(f"{name:<14} {mode:<10} {out[name]}", file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
