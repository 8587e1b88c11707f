"""What the Tracing layer costs: ``python -m benchmarks.tracing``.

The in-process stack (``benchmarks.inprocess``: no sockets, canned upstream) measured with
tracing off and on, side by side in alternating rounds, so that the load the machine is
under falls on every arm alike.  "On" is the layer as ``serve`` sets it up: an SDK tracer
provider with a batch span processor and a periodic metric reader, exporting over
OTLP/HTTP to a local receiver (a separate process, so its CPU is not counted; the batch
processor's export thread is, since it is ours).  "On, 10 % sampled" is the same with
``OTEL_TRACES_SAMPLER=traceidratio`` at 0.1 (metrics still count every request).

Figures are CPU µs from ``time.process_time``:

* per plain request (goal, issue 16: at most +25 %);
* per streamed event, as the marginal cost: streams of 10 and of 80 content events are
  timed, and the difference divided by 70, so that the per-request cost (the spans) does
  not pass for a per-event one (goal: at most +3 µs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks.inprocess import measure
from benchmarks.upstream import EVENTS, harvest

# A receiver that takes every POST and answers 200: the collector's part, nothing more.
_RECEIVER = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
server = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

SHORT, LONG = 10, 80  # content events per stream, for the marginal per-event cost


def _arm(
    extra: dict[str, Any] | None, sampler: str | None, requests: int, canned: Any
) -> dict[str, float]:
    # The SDK reads its sampler from the process environment when the provider is made.
    if sampler is None:
        os.environ.pop("OTEL_TRACES_SAMPLER", None)
        os.environ.pop("OTEL_TRACES_SAMPLER_ARG", None)
    else:
        os.environ["OTEL_TRACES_SAMPLER"] = sampler
        os.environ["OTEL_TRACES_SAMPLER_ARG"] = "0.1"
    plain = asyncio.run(measure(frozenset(), requests, canned["default"], extra))
    # ``measure`` divides a stream's cost by EVENTS; undone here to get the cost per stream.
    streams = {
        n: asyncio.run(measure(frozenset(), requests, canned[n], extra))["same_us_per_event"]
        * EVENTS
        for n in (SHORT, LONG)
    }
    return {
        "plain_us_per_request": plain["plain_us_per_request"],
        "stream_us_per_event": (streams[LONG] - streams[SHORT]) / (LONG - SHORT),
        "translated_us_per_event_avg": plain["translated_us_per_event"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    receiver = subprocess.Popen(
        [sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        tracing = {"tracing": {"endpoint": f"http://127.0.0.1:{port}"}}
        canned: dict[Any, Any] = {"default": harvest(), SHORT: harvest(SHORT), LONG: harvest(LONG)}
        arms: dict[str, tuple[dict[str, Any] | None, str | None]] = {
            "off": (None, None),
            "on": (tracing, None),
            "on, 10% sampled": (tracing, "traceidratio"),
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
        for _ in range(args.rounds):
            for name, (extra, sampler) in arms.items():
                results[name].append(_arm(extra, sampler, args.requests, canned))
                time.sleep(0.2)
    finally:
        receiver.terminate()
        receiver.wait(10)
    report: dict[str, Any] = {"rounds": args.rounds, "requests": args.requests}
    for figure in results["off"][0]:
        off = statistics.median(r[figure] for r in results["off"])
        row: dict[str, float] = {"off": round(off, 2)}
        for name in ("on", "on, 10% sampled"):
            on = statistics.median(r[figure] for r in results[name])
            row[name] = round(on, 2)
            row[f"{name}: added"] = round(on - off, 2)
            row[f"{name}: ratio"] = round(on / off, 3) if off > 0 else float("nan")
        report[figure] = row
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
