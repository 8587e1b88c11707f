"""Where a request's Python work goes: ``python -m benchmarks.bytecodes``.

``benchmarks.instructions`` says how much a request costs; this says where.  It runs the
in-process stack (``inprocess.py``, as the instruction counts do) with a trace function
that counts every bytecode the interpreter executes, and charges each to the function it
ran in.  The counts are exact and the same on every run and machine (hash randomisation
fixed, asyncio's own event loop whether or not uvloop is installed), so two versions of the
code can be compared module by module, or function by function, without valgrind.

A bytecode is not an instruction: what one costs ranges from a few instructions (a local
read) to thousands (a call into C that builds a dict), about 70 on average across a whole
request of this stack.  Work done inside C is not seen at all (``None in d.values()`` is one
bytecode, whatever it compares), so a change that saves bytecodes may still cost
instructions: ``benchmarks.instructions`` judges it, this says where to look.

A coroutine that waits pays bytecodes again each time it is resumed, so a deep stack of
layers waiting on the same upstream call shows up in every layer's count.

``--baseline DIR`` counts another checkout beside this one (``git worktree add DIR
<commit>``), from its own packages, and prints the difference.  ``--without`` leaves layers
out of the stack (``asgi_rotator.stack.LAYERS``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.instructions import MODES
from benchmarks.run import checkout_dir, run_in_checkout

ROOT = Path(__file__).resolve().parent.parent

# Run in the checkout's own interpreter state: its stack, its canned upstream client and its
# request bodies (``benchmarks.inprocess``).  Prints {"file:function": bytecodes, ...} for
# all the requests counted, and the number counted.
_DRIVER = """
import asyncio, collections, inspect, json, sys
from benchmarks import inprocess
from benchmarks.apps import stack_config
from benchmarks.upstream import harvest
from asgi_rotator import stack
from asgi_rotator.config import parse_config

model, stream, warm, requests = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
without = set(filter(None, sys.argv[5].split(",")))
roots = [p.rstrip("/") + "/" for p in sys.argv[6:]]
canned = harvest()
counts = collections.Counter()
names = {}

def where(code):
    found = names.get(code)
    if found is None:
        path = code.co_filename
        for root in roots:
            if path.startswith(root):
                path = path[len(root):]
                break
        found = names[code] = f"{path}:{code.co_qualname}"
    return found

def trace(frame, event, arg):
    frame.f_trace_opcodes = True
    frame.f_trace_lines = False
    name = where(frame.f_code)
    def opcode(frame, event, arg):
        if event == "opcode":
            counts[name] += 1
        return opcode
    return opcode

async def main():
    kwargs = {"without": without} if without else {}
    if without and "without" not in inspect.signature(stack.build_app).parameters:
        raise SystemExit("this checkout's build_app takes no without=")
    gateway = stack.build_app(parse_config(stack_config("http://upstream.invalid"), {}), environ={}, **kwargs)
    client = inprocess.CannedClient(canned)
    for provider in gateway.providers:
        provider.client = client
    body = inprocess._body(model, stream)
    for _ in range(warm):
        await inprocess._call(gateway, body)
    sys.settrace(trace)
    try:
        for _ in range(requests):
            await inprocess._call(gateway, body)
    finally:
        sys.settrace(None)
    await gateway.aclose()

asyncio.run(main())
print(json.dumps({"requests": requests, "counts": counts}))
"""


def count(
    checkout: Path,
    mode: str,
    requests: int = 50,
    warm: int = 50,
    without: frozenset[str] = frozenset(),
) -> dict[str, float]:
    """Bytecodes per request, by ``file:function`` (files relative to the checkout or to
    ``sys.path``'s directories)."""
    model, stream = MODES[mode]
    roots = [str(checkout), *(p for p in sys.path if p and p != str(checkout))]
    completed = run_in_checkout(
        checkout,
        [
            sys.executable,
            "-c",
            _DRIVER,
            model,
            "1" if stream else "0",
            str(warm),
            str(requests),
            ",".join(sorted(without)),
            # Longest first: a site-packages directory sits inside the interpreter's own.
            *sorted(roots, key=len, reverse=True),
        ],
    )
    out = json.loads(completed.stdout.splitlines()[-1])
    return {name: n / out["requests"] for name, n in out["counts"].items()}


def by_file(counts: dict[str, float], *, codecs_apart: bool = True) -> dict[str, float]:
    """Per file: ours by path (``asgi_rotator/dispatch.py``), a library by its top-level
    package (``anyio``, ``asyncio``).  Without ``codecs_apart``, the codecs are one row,
    ``asgi_rotator/protocols/``: their files were split and renamed over time, so between
    two versions only their sum compares."""
    out: dict[str, float] = {}
    for name, n in counts.items():
        path = name.rpartition(":")[0]
        if not path.startswith(("asgi_rotator/", "benchmarks/")):
            path = path.split("/", 1)[0].removesuffix(".py")
        elif not codecs_apart and path.startswith("asgi_rotator/protocols/"):
            path = "asgi_rotator/protocols/"
        out[path] = out.get(path, 0) + n
    return out


def table(columns: dict[str, dict[str, float]], top: int) -> str:
    """The rows with the most bytecodes (or, with two columns, the largest differences)."""
    names = list(columns)
    rows = set().union(*columns.values())

    def weight(row: str) -> float:
        values = [columns[n].get(row, 0.0) for n in names]
        return abs(values[0] - values[1]) if len(values) == 2 else values[0]

    shown = sorted(rows, key=weight, reverse=True)[:top]
    header = f"{'':<56}" + "".join(f"{n:>14}" for n in names)
    if len(names) == 2:
        header += f"{'difference':>12}"
    lines = [header]
    for row in [*shown, "total"]:
        values = [
            sum(columns[n].values()) if row == "total" else columns[n].get(row, 0.0) for n in names
        ]
        line = f"{row[-56:]:<56}" + "".join(f"{v:>14,.0f}" for v in values)
        if len(values) == 2:
            line += f"{values[0] - values[1]:>+12,.0f}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bytecodes")
    parser.add_argument("--mode", choices=MODES, default="plain")
    parser.add_argument("--requests", type=int, default=50, help="requests counted (default 50)")
    parser.add_argument(
        "--by",
        choices=("module", "file", "function"),
        default="module",
        help="module: per file, the codecs as one row (default); file: every file apart",
    )
    parser.add_argument("--top", type=int, default=30, help="rows shown (default 30)")
    parser.add_argument("--without", default="", help="comma-separated stack layers to leave out")
    parser.add_argument("--json", action="store_true", help="every row, as JSON")
    parser.add_argument(
        "--baseline", type=checkout_dir, metavar="DIR", help="another checkout, counted beside"
    )
    args = parser.parse_args(argv)
    without = frozenset(filter(None, args.without.split(",")))
    checkouts = {"asgi-rotator": ROOT}
    if args.baseline is not None:
        checkouts["baseline"] = args.baseline
    columns = {}
    for name, checkout in checkouts.items():
        counts = count(checkout, args.mode, args.requests, without=without)
        if args.by != "function":
            counts = by_file(counts, codecs_apart=args.by == "file")
        columns[name] = counts
    if args.json:
        print(json.dumps(columns))
    else:
        print(
            f"bytecodes per request, {args.mode}" + (f", without {args.without}" if without else "")
        )
        print(table(columns, args.top))


if __name__ == "__main__":
    main()
