"""What the Tracing layer costs: ``python -m benchmarks.tracing``.

The in-process stack (``benchmarks.inprocess``: no sockets, canned upstream) measured with
tracing off and on, side by side in alternating rounds, so that the load the machine is
under falls on every arm alike.  "On" is the layer as ``serve`` sets it up: an SDK tracer
provider with a batch span processor and a periodic metric reader, exporting over
OTLP/HTTP to a local receiver (a separate process, so its CPU is not counted; the batch
processor's export thread is, since it is ours).  "On, 10 % sampled" is the same with
``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` at 0.1, the setting docs/tracing.md
suggests (for requests that carry no ``traceparent``, as here, it samples as
``traceidratio`` does); the metrics still count every request.

Every span a timed loop makes is exported inside the timing: the loop ends with the tracer
provider's ``force_flush``, and the batch processor's queue is made large enough that no span
is dropped (the SDK drops spans when its queue is full, which would leave their encoding out
of the figure).

Figures are CPU µs from ``time.process_time`` (every thread of the process):

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

from benchmarks.apps import stack_config
from benchmarks.inprocess import CannedClient, _body, _call
from benchmarks.upstream import Canned, harvest

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


async def _per_call(
    extra: dict[str, Any] | None, requests: int, canned: dict[str, Canned], model: str, stream: bool
) -> float:
    """CPU µs per call of one kind, the export of its spans included."""
    from asgi_rotator.config import parse_config
    from asgi_rotator.stack import build_app

    config = parse_config({**stack_config("http://upstream.invalid"), **(extra or {})}, {})
    gateway = build_app(config, environ=dict(os.environ))
    client = CannedClient(canned)
    for provider in gateway.providers:
        provider.client = client
    telemetry = gateway.telemetry
    provider = telemetry.tracer_provider if telemetry is not None else None
    body = _body(model, stream)
    for _ in range(min(200, requests)):
        await _call(gateway, body)
    if provider is not None:
        provider.force_flush()
    started = time.process_time()
    for _ in range(requests):
        await _call(gateway, body)
    if provider is not None:
        provider.force_flush()  # the export thread's work for these spans, counted
    per_call = (time.process_time() - started) / requests * 1e6
    await gateway.aclose()
    return per_call


def _arm(
    extra: dict[str, Any] | None, sampler: str | None, requests: int, canned: Any
) -> dict[str, float]:
    # The SDK reads its sampler and batch sizes from the process environment when the
    # provider is made.
    if sampler is None:
        os.environ.pop("OTEL_TRACES_SAMPLER", None)
        os.environ.pop("OTEL_TRACES_SAMPLER_ARG", None)
    else:
        os.environ["OTEL_TRACES_SAMPLER"] = sampler
        os.environ["OTEL_TRACES_SAMPLER_ARG"] = "0.1"
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(8 * requests + 4096)  # never full: no drops
    plain = asyncio.run(_per_call(extra, requests, canned["default"], "chat/bench", False))
    streams = max(1, requests // 4)
    per_stream = {
        n: asyncio.run(_per_call(extra, streams, canned[n], "chat/bench", True))
        for n in (SHORT, LONG)
    }
    translated = asyncio.run(_per_call(extra, streams, canned["default"], "messages/bench", True))
    return {
        "plain_us_per_request": plain,
        "stream_us_per_event": (per_stream[LONG] - per_stream[SHORT]) / (LONG - SHORT),
        "translated_us_per_stream": translated,
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
            "on, 10% sampled": (tracing, "parentbased_traceidratio"),
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
