"""The benchmark harness still runs: one ``--quick`` run end to end, plus its load generator
and stream probe against the benchmark upstream.  Nothing here asserts a speed."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.load import parse_wrk, probe_streams, python_load
from benchmarks.upstream import EVENTS, BenchUpstream, harvest
from tests.server import serve

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_run_produces_figures(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "round 1" in completed.stderr  # progress was shown

    results = json.loads((tmp_path / "results.json").read_text())
    throughput = results["throughput"]
    assert {"direct", "asgi-rotator"} <= set(throughput)
    for runs in throughput.values():
        for run in runs["16"]:
            assert run["requests"] > 0
            assert run["errors"] == 0
    assert throughput["asgi-rotator"]["16"][0]["cpu_us_per_request"] > 0
    streams = results["streams"]["asgi-rotator"]
    for kind in ("same", "translated"):
        assert streams[kind]["ttft_ms"]
        assert set(streams[kind]["content_events"]) == {EVENTS}
        assert streams[kind]["cpu_us_per_event"]
    assert results["memory"]["asgi-rotator"]["held"]
    many = results["open_streams"]
    assert many["opened"] == many["streams"] == 200 and many["watch"]["heartbeats"] > 0
    assert many["plain_busy"]["requests"] > 0 and many["plain_idle"]["requests"] > 0
    assert results["soak"]["requests"] >= 1000
    assert results["meta"]["load_tool"] in ("wrk", "python")
    assert results["inprocess"]["asgi-rotator"]["plain_us_per_request"]

    # The tracing arm exported every request's spans to the receiver, which decoded them.
    traced = throughput["asgi-rotator (tracing)"]["16"][0]
    assert traced["cpu_us_per_request"] > 0
    received = results["otlp_received"]
    assert received["rejected"] == 0 and received["metric_points"] > 0
    assert received["spans"] >= received["requests_answered"] > 0
    # The new layers' in-process figures, beside the stack without them.
    layers = results["layers"]
    assert layers["tracing"]["plain_us_per_request"]["on"] > 0
    assert "on: added" in layers["tracing"]["stream_us_per_event"]
    cache = layers["field_cache"]
    assert cache["anthropic_injected"] > 0.9 and cache["gemini_injected"] > 0.9  # rules applied
    assert {"no_rule_us_per_request", "rule_us_per_event", "text_rule_us_per_event"} <= set(cache)
    assert layers["cost"]["pricing_work_us"] > 0

    report = (tmp_path / "results.md").read_text()
    assert "## Goals" in report
    assert "| asgi-rotator |" in report
    goals = report.split("## Goals", 1)[1].split("\n## ", 1)[0]
    for goal in (
        "tracing on: CPU per plain request",
        "tracing on: CPU per streamed event",
        "field cache: <= 10 µs",
        "field cache: <= 2 µs",
        "cost lookup",
    ):
        row = next(line for line in goals.splitlines() if goal in line)
        assert "not measured" not in row, row
    assert "## The new layers" in report
    if importlib.util.find_spec("matplotlib") is not None:
        assert {p.name for p in tmp_path.glob("*.png")} >= {"throughput.png", "streams.png"}


def test_python_load_generator_and_stream_probe() -> None:
    with serve(BenchUpstream(harvest())) as base:
        url = f"{base}/v1/chat/completions"
        headers = [("Content-Type", "application/json")]
        plain = b'{"model":"bench","messages":[{"role":"user","content":"hi"}]}'
        result = asyncio.run(python_load(url, plain, headers, 2, 0.2))
        assert result.requests > 0
        assert result.errors == 0
        assert result.p50_ms <= result.p99_ms
        stream = plain[:-1] + b',"stream":true}'
        probe = asyncio.run(probe_streams(url, stream, headers, 3))
    assert probe.errors == 0
    assert len(probe.ttft_ms) == 3
    assert probe.content_events == [EVENTS] * 3
    assert probe.events == [EVENTS + 3] * 3  # role chunk, finish chunk, [DONE]


def test_wrk_output_is_parsed() -> None:
    output = """\
Running 5s test @ http://127.0.0.1:8080/v1/chat/completions
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  301.20us   9.87ms   90.11%
    Req/Sec    10.53k   412.00    11.20k    70.00%
  Latency Distribution
     50%    1.48ms
     75%    1.60ms
     90%    1.80ms
     99%    2.91ms
  52398 requests in 5.00s, 41.23MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec:  10479.60
Transfer/sec:      8.25MB
"""
    result = parse_wrk(output, 16)
    assert result.requests == 52398
    assert result.seconds == pytest.approx(5.0)
    assert result.rps == pytest.approx(10479.6)
    assert result.p50_ms == pytest.approx(1.48)
    assert result.p99_ms == pytest.approx(2.91)
    assert result.errors == 3  # non-2xx and timeouts; read errors are idle closes


@pytest.mark.slow
def test_a_failed_measurement_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    """wrk exiting with an error used to end the run with no results at all."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrk = bin_dir / "wrk"
    wrk.write_text("#!/bin/sh\necho 'unable to connect (stand-in for a failing wrk)' >&2\nexit 1\n")
    wrk.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks", "--quick", "--load", "wrk"),
            *("--arms", "asgi-rotator", "--out", str(out)),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    failures = {f["what"]: f for f in results["failures"]}
    assert "throughput round 1 c=16 asgi-rotator" in failures
    assert "soak" in failures
    cause = failures["throughput round 1 c=16 asgi-rotator"]["cause"]
    assert "wrk exited with status 1" in cause and "stand-in for a failing wrk" in cause
    # What did not need wrk was still measured.
    assert results["streams"]["asgi-rotator"]["same"]["ttft_ms"]
    assert results["memory"]["asgi-rotator"]["held"]
    assert "## Failed measurements" in (out / "results.md").read_text()
    assert not (out / "results.partial.json").exists()


def test_results_are_written_after_every_measurement(tmp_path: Path) -> None:
    """A crash (or a kill) loses only the measurement under way."""
    from benchmarks.load import MeasurementError
    from benchmarks.run import Run, settings_from

    run = Run(settings_from(["--quick", "--out", str(tmp_path)]))
    try:
        with run.measuring("throughput round 1 c=16 x"):
            run.results["throughput"]["x"] = {"16": [{"requests": 5}]}
        partial = json.loads((tmp_path / "results.partial.json").read_text())
        assert partial["throughput"]["x"]["16"][0]["requests"] == 5
        with run.measuring("soak"):
            raise MeasurementError("wrk exited with status 1: boom")
        partial = json.loads((tmp_path / "results.partial.json").read_text())
        assert partial["failures"][0]["cause"] == "MeasurementError: wrk exited with status 1: boom"
    finally:
        run.workdir.cleanup()


def test_the_portkey_arm_is_skipped_with_a_note_without_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.run import arm_specs, settings_from

    monkeypatch.setenv("PATH", str(tmp_path))  # no node, no npm
    settings = settings_from(["--quick", "--with-portkey", "--out", str(tmp_path)])
    assert "portkey" not in arm_specs(settings)
    assert settings.notes == ["--with-portkey: node and npm not found; the Portkey arm is skipped"]


def test_the_otlp_receiver_decodes_what_the_sdk_exports_and_counts_it() -> None:
    """The tracing arm's receiver: its span count is what the report checks the arm's
    exports against, so it must count what arrives, and refuse what is not OTLP."""
    import httpx
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from benchmarks.apps import OtlpReceiver

    with serve(OtlpReceiver(), lifespan="off") as base:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(f"{base}/v1/traces")))
        tracer = provider.get_tracer("bench-test")
        for _ in range(3):
            with tracer.start_as_current_span("request"), tracer.start_as_current_span("attempt"):
                pass
        provider.shutdown()
        garbage = httpx.post(
            f"{base}/v1/traces",
            content=b"\xff not protobuf",
            headers={"content-type": "application/x-protobuf"},
        )
        stats = httpx.get(f"{base}/stats").json()
    assert garbage.status_code == 400
    assert stats["spans"] == 6
    assert stats["exports"] == 6  # one per span: the simple processor exports each as it ends
    assert stats["rejected"] == 1


def test_a_missed_goal_is_explained_by_its_profile() -> None:
    """The report names, for a goal it missed, where the profile of that load says the time
    went: each package's share, in µs of the measured figure."""
    from benchmarks import report

    raw = "\n".join(
        [
            "run (uvicorn/server.py:86);send (uvicorn/protocols/http/httptools_impl.py:499) 30",
            "run (uvicorn/server.py:86);__call__ (asgi_rotator/dispatch.py:142) 50",
            "run (uvicorn/server.py:86);_request (aiohttp/client.py:819) 20",
        ]
    )
    summary = report.summarize_profile(raw)
    assert dict(summary["packages"]) == {"asgi_rotator": 50.0, "uvicorn": 30.0, "aiohttp": 20.0}
    fig = {"arms": {report.STACK: {"16": {"cpu_us": 300.0}}}, "streams": {}}
    rows = [
        ("CPU per request <= 2x floor-aiohttp's", "2.50x", False),
        ("soak: RSS growth over 10 requests < 2%", "+0.00%", True),
    ]
    lines = report._missed({"profile": {"plain": summary}}, fig, rows)
    text = "\n".join(lines)
    assert "CPU per request <= 2x" in text and "soak" not in text
    assert "asgi_rotator 50% (150.0 µs/req)" in text
    assert "uvicorn 30% (90.0 µs/req)" in text
    assert "`__call__` 50.0%" in text
    assert report._missed({}, fig, rows[1:]) == []


def test_open_streams_are_capped_by_the_open_file_hard_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway holds two descriptors a stream: under a hard limit of 20,000, 10,000 open
    streams cannot all be opened, and the harness measures what fits rather than a run of
    failed connects."""
    import resource

    from benchmarks import run

    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 20_000))
    assert run.streams_allowed(10_000) == 9_744
    assert run.streams_allowed(2_000) == 2_000
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, resource.RLIM_INFINITY))
    assert run.streams_allowed(10_000) == 10_000


def test_a_baseline_checkout_is_measured_from_its_own_code(tmp_path: Path) -> None:
    """``--baseline DIR`` adds an arm whose processes import DIR's packages, not this
    checkout's: before and after figures from one run."""
    from benchmarks.run import BASELINE, Arm, Run, arm_specs, settings_from

    baseline = tmp_path / "before"
    for package in ("asgi_rotator", "benchmarks"):
        shutil.copytree(ROOT / package, baseline / package)
    # The copy's in-process figures say where they came from.
    inprocess = baseline / "benchmarks" / "inprocess.py"
    source = inprocess.read_text()
    marked = source.replace(
        "print(json.dumps(run(measure(without, args.requests, canned))))",
        'print(json.dumps({**run(measure(without, args.requests, canned)), "from_copy": 1.0}))',
    )
    assert marked != source
    inprocess.write_text(marked)

    out = tmp_path / "out"
    settings = settings_from(
        ["--quick", "--arms", "asgi-rotator", "--baseline", str(baseline), "--out", str(out)]
    )
    specs = arm_specs(settings)
    assert set(specs) == {"direct", "asgi-rotator", BASELINE}
    assert specs[BASELINE].root == str(baseline) and specs["asgi-rotator"].root == ""
    run = Run(settings)
    try:
        figures: dict[str, dict[str, list[float]]] = {}
        for name in ("asgi-rotator", BASELINE):
            run._inprocess(Arm(name, specs[name]), 0, 20, figures)
    finally:
        run.workdir.cleanup()
    assert figures[BASELINE]["from_copy"] == [1.0]
    assert "from_copy" not in figures["asgi-rotator"]
    assert figures[BASELINE]["plain_us_per_request"][0] > 0

    with pytest.raises(SystemExit):
        settings_from(["--baseline", str(tmp_path / "nothing-here")])


def test_instruction_counts_are_read_from_cachegrind_and_divided_per_request() -> None:
    from benchmarks.instructions import parse_refs, per_unit

    summary = "==20439== \n==20439== I   refs:      2,173,352,867\n"
    assert parse_refs(summary) == 2_173_352_867
    with pytest.raises(ValueError):
        parse_refs("==1== no summary: the run was killed\n")
    assert per_unit(1_000_000, 6_000_000, 500) == 10_000
    assert per_unit(1_000_000, 5_000_000, 100, events=40) == 1_000


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instructions_per_request_are_counted_under_valgrind() -> None:
    from benchmarks.instructions import ROOT as BENCH_ROOT
    from benchmarks.instructions import measure

    plain = measure(BENCH_ROOT, "plain", requests=20, warm=5)
    # A plain request through the whole stack runs Python code of every layer: hundreds of
    # thousands of instructions, never nothing and never the interpreter's start-up.
    assert 50_000 < plain < 5_000_000


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_served_instructions_are_counted_for_the_floor_and_the_stack() -> None:
    pytest.importorskip("aiohttp")
    from benchmarks.instructions import FLOOR, served
    from benchmarks.instructions import ROOT as BENCH_ROOT

    figures = served({"asgi-rotator": BENCH_ROOT}, requests=10, warm=5)
    floor = figures[FLOOR]["served_per_request"]
    stack = figures["asgi-rotator"]["served_per_request"]
    # Both answer through uvicorn and aiohttp's client; the stack runs every layer besides.
    assert 50_000 < floor < stack < 10_000_000
    assert figures["asgi-rotator"]["over_floor"] == round(stack / floor, 3)


def test_bytecodes_are_charged_to_the_functions_that_ran_them() -> None:
    from benchmarks.bytecodes import by_file, count, table

    full = count(ROOT, "plain", requests=3, warm=3)
    # Every layer's own code runs for a plain request, and the same request counts the same
    # every time: the run is deterministic.
    assert full["asgi_rotator/dispatch.py:ProviderDispatch._forward"] > 0
    assert full["asgi_rotator/middleware/log_lines.py:LogLines.__call__"] > 0
    assert count(ROOT, "plain", requests=3, warm=3) == full
    files = by_file(full)
    assert files["asgi_rotator/dispatch.py"] > 0
    assert "asyncio" in files  # a library by its package, not by where it is installed
    assert sum(files.values()) == pytest.approx(sum(full.values()))
    codecs = by_file(full, codecs_apart=False)["asgi_rotator/protocols/"]
    assert codecs == pytest.approx(
        sum(n for name, n in files.items() if name.startswith("asgi_rotator/protocols/"))
    )
    without = by_file(count(ROOT, "plain", requests=3, warm=3, without=frozenset({"log_lines"})))
    assert "asgi_rotator/middleware/log_lines.py" not in without
    assert sum(without.values()) < sum(files.values())
    shown = table({"asgi-rotator": files, "baseline": without}, top=3).splitlines()
    assert shown[1].startswith("asgi_rotator/middleware/log_lines.py")  # the largest difference
    assert shown[-1].startswith("total")
