"""What the Tracing layer costs: ``python -m benchmarks.tracing``.

The in-process stack (``benchmarks.inprocess``: no sockets, canned upstream) measured with
tracing off and on, side by side in alternating rounds, so that the load the machine is
under falls on both arms alike.  "On" is the layer as ``serve`` sets it up: an SDK tracer
provider with a batch span processor and a periodic metric reader, exporting over
OTLP/HTTP to a local receiver (a separate process, so its CPU is not counted; the batch
processor's export thread is, since it is ours).  Figures are CPU µs from
``time.process_time``; the goals (issue 16): at most +25 % per plain request and at most
+3 µs per streamed event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks.inprocess import measure
from benchmarks.upstream import harvest

# A receiver that takes every POST and answers 200: the collector's part, nothing more.
_RECEIVER = """
import sys
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

FIGURES = ("plain_us_per_request", "same_us_per_event", "translated_us_per_event")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    receiver = subprocess.Popen(
        [sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        tracing = {"tracing": {"endpoint": f"http://127.0.0.1:{port}"}}
        canned = harvest()
        results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        for _ in range(args.rounds):
            for arm, extra in (("off", None), ("on", tracing)):
                results[arm].append(asyncio.run(measure(frozenset(), args.requests, canned, extra)))
                time.sleep(0.2)
    finally:
        receiver.terminate()
        receiver.wait(10)
    report: dict[str, Any] = {"rounds": args.rounds, "requests": args.requests}
    for figure in FIGURES:
        off = statistics.median(r[figure] for r in results["off"])
        on = statistics.median(r[figure] for r in results["on"])
        report[figure] = {
            "off": round(off, 2),
            "on": round(on, 2),
            "added": round(on - off, 2),
            "ratio": round(on / off, 3),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
