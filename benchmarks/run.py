"""The benchmark harness: ``python -m benchmarks`` (or ``python benchmarks/run.py``).

One run starts the benchmark upstream, then every arm's server, and measures the arms one
after another, interleaved in rounds (each round visits every arm, in a rotated order, so
drift on the machine spreads over all arms instead of landing on one).  Medians over the
rounds are reported, as ratios to the bare aiohttp passthrough (the floor) and to LiteLLM's
proxy measured in the same run.

Placement: the gateway arms are pinned to one core (``taskset``), the upstream, the load
generator and this process to the others, so a gateway's requests per second is what one
core of gateway can do.  With a single usable core nothing is pinned and the report says so.

The arms come from one mapping, ``arm_specs()``: name -> how to serve it.  Switching a layer
off uses ``build_app(config, without={layer})`` with the names in ``stack.LAYERS``; when the
stack does not offer that yet, those arms are simply absent.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import litellm_arm, portkey_arm, procstat, report
from benchmarks.apps import FLOORS, server_stack, stack_layers
from benchmarks.load import (
    HeldStreams,
    LoadResult,
    MeasurementError,
    probe_streams,
    run_load,
    sample_response,
    wrk_path,
)
from benchmarks.upstream import EVENTS, HOLD_MODEL

RESULTS = Path(__file__).parent / "results"
STACK = "asgi-rotator"
TRACED = f"{STACK} (tracing)"
BASELINE = "baseline"
PATH = "/v1/chat/completions"


@dataclass
class Spec:
    """How to serve one arm."""

    kind: str  # direct | floor | stack | litellm | portkey
    app: str = ""  # floor-aiohttp, stack ...
    client: str = ""
    without: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()  # more arguments for benchmarks.apps
    tracing: bool = False  # the stack exporting spans and metrics to the OTLP receiver
    root: str = ""  # another checkout of asgi-rotator that serves this arm ("": this one)


@dataclass
class Arm:
    name: str
    spec: Spec
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    model: str = "bench"
    translated_model: str | None = None
    hold_model: str = HOLD_MODEL
    key: str = "bench-key"
    # Peers that take the upstream from the request (Portkey): per path.
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    translated_headers: list[tuple[str, str]] = field(default_factory=list)
    rss_idle: int = 0
    # Requests it answered in the whole run (loads, warm-ups, probes, held streams): what
    # the tracing arm's exported spans are checked against.
    answered: int = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def body(self, *, stream: bool = False, translated: bool = False, hold: bool = False) -> bytes:
        model = self.hold_model if hold else self.translated_model if translated else self.model
        stream_part = ',"stream":true' if stream else ""
        return (
            f'{{"model":"{model}","messages":[{{"role":"user","content":"Say hello"}}],'
            f'"max_tokens":16{stream_part}}}'
        ).encode()

    def headers(self, *, translated: bool = False) -> list[tuple[str, str]]:
        base = [("Content-Type", "application/json"), ("Authorization", f"Bearer {self.key}")]
        return base + (self.translated_headers if translated else self.extra_headers)


@dataclass
class Settings:
    quick: bool
    rounds: int
    concurrency: tuple[int, ...]
    seconds: float
    stream_samples: int
    stream_seconds: float
    held: tuple[int, ...]
    open_streams: int  # the many-open-streams figure (0: not measured)
    soak_requests: int
    latency: float
    pace: float
    load: str
    client: str
    with_litellm: bool
    with_portkey: bool
    profile: bool
    arms: tuple[str, ...] = ()
    baseline: Path | None = None  # another checkout, measured as the arm BASELINE
    out: Path = RESULTS
    notes: list[str] = field(default_factory=list)


def arm_specs(settings: Settings) -> dict[str, Spec]:
    """Every arm, in report order: name -> how to serve it."""
    from asgi_rotator.upstream import available_clients

    clients = available_clients()
    main = settings.client if settings.client != "auto" else clients[0]
    specs: dict[str, Spec] = {"direct": Spec("direct")}
    floors = [lib for lib in FLOORS if lib in clients]
    if settings.quick:
        floors = floors[-1:]  # the fastest installed
    for lib in floors:
        specs[f"floor-{lib}"] = Spec("floor", app=f"floor-{lib}")
    specs[STACK] = Spec("stack", app="stack", client=main)
    if settings.baseline is not None:
        # The same stack from another checkout (a commit before a change), served and
        # measured in-process like this one: before and after in one run, on one machine.
        specs[BASELINE] = Spec("stack", app="stack", client=main, root=str(settings.baseline))
    if _installed("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"):
        specs[TRACED] = Spec("stack", app="stack", client=main, tracing=True)
    else:
        settings.notes.append(
            "the OpenTelemetry SDK is not installed (pip install 'asgi-rotator[otel]'): "
            "no tracing arm"
        )
    if not settings.quick:
        for other in clients:
            if other != main:
                specs[f"{STACK} ({other})"] = Spec("stack", app="stack", client=other)
        for layer in stack_layers():
            specs[f"without {layer}"] = Spec("stack", app="stack", client=main, without=(layer,))
    if settings.with_litellm:
        specs["litellm"] = Spec("litellm")
    if settings.with_portkey:
        why = portkey_arm.missing_tools()
        if why is None:
            specs["portkey"] = Spec("portkey")
        else:
            settings.notes.append(f"--with-portkey: {why}; the Portkey arm is skipped")
    if settings.arms:
        specs = {
            name: spec
            for name, spec in specs.items()
            if name in settings.arms or name in ("direct", BASELINE)
        }
    return specs


def _installed(*modules: str) -> bool:
    try:
        return all(importlib.util.find_spec(name) is not None for name in modules)
    except ImportError:  # a parent package missing
        return False


# --- processes ------------------------------------------------------------------------------


class Placement:
    """Which cores the gateway arms get, and which the rest."""

    def __init__(self) -> None:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.pinned = len(cores) >= 2
        self.gateway = cores[-1:] if self.pinned else cores
        self.load = cores[:-1] if self.pinned else cores
        self.taskset = shutil.which("taskset")

    def pin_self(self) -> None:
        if self.pinned:
            os.sched_setaffinity(0, self.load)

    def gateway_prefix(self) -> list[str]:
        if self.pinned and self.taskset:
            return [self.taskset, "-c", ",".join(map(str, self.gateway))]
        return []

    def describe(self) -> str:
        if not self.pinned:
            return "not pinned (one usable core)"
        how = "taskset" if self.taskset else "sched_setaffinity"
        return (
            f"gateway arms on core {','.join(map(str, self.gateway))}; upstream and load on "
            f"core {','.join(map(str, self.load))} ({how})"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(
    argv: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    gateway_core: Placement | None = None,
    cwd: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server in its own process group, its output appended to ``log``: a pipe
    nobody reads would block the server at its first 64 KiB of warnings."""
    preexec = None
    if gateway_core is not None and gateway_core.pinned and not gateway_core.taskset:
        cores = set(gateway_core.gateway)

        def preexec() -> None:
            os.sched_setaffinity(0, cores)

    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopped with everything it started
            preexec_fn=preexec,
        )


def open_files_hard_limit() -> float:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return math.inf if hard == resource.RLIM_INFINITY else hard


def streams_allowed(wanted: int) -> int:
    """How many of ``wanted`` open streams one gateway process can hold: two descriptors
    each (the client's socket and the upstream's), and some to spare for everything else.
    Every process of the run has the hard limit this one has; the arms raise their soft
    limit to it (``apps.main``)."""
    hard = open_files_hard_limit()
    return wanted if hard == math.inf else max(0, min(wanted, int(hard - 512) // 2))


def settle(pid: int, limit: float = 3.0) -> None:
    """Wait until the process has finished what the load left in flight (< 1 ms of CPU in
    50 ms), at most ``limit`` seconds.  A load generator stops with requests still open, and
    a gateway stopped (SIGSTOP) in the middle of them finds, when it is continued minutes
    later, that their deadlines passed: it answers 504 and, rightly, cools the model down,
    and the next figure measured on it is a run of fast errors."""
    deadline = time.monotonic() + limit
    last = procstat.cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = procstat.cpu_seconds(pid)
        if now - last < 0.001:
            return
        last = now


def log_tail(log: Path, size: int = 3000) -> str:
    try:
        return log.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return ""


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def wait_ready(
    url: str, process: subprocess.Popen[bytes] | None, log: Path, timeout: float, probe: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    host, port = url.removeprefix("http://").split(":")
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{log_tail(log)}")
        try:
            if probe:
                with urllib.request.urlopen(url + probe, timeout=2) as response:
                    if response.status == 200:
                        return
            else:
                with socket.create_connection((host, int(port)), timeout=1):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready in {timeout:.0f}s")


# --- the run --------------------------------------------------------------------------------


class Run:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.placement = Placement()
        self.tool = (
            settings.load if settings.load != "auto" else ("wrk" if wrk_path() else "python")
        )
        self.arms: list[Arm] = []
        self.upstream: subprocess.Popen[bytes] | None = None
        self.upstream_url = ""
        self.receiver: subprocess.Popen[bytes] | None = None
        self.receiver_url = ""
        self.traced_log_start = 0
        self.results: dict[str, Any] = {
            "throughput": {},
            "throughput_translated": {},
            "streams": {},
            "memory": {},
            "soak": {},
            "failures": [],
        }
        self.workdir = tempfile.TemporaryDirectory(prefix="asgi-rotator-bench-")
        self.step = 0

    def say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {text}", file=sys.stderr, flush=True)

    # processes

    def start(self) -> None:
        s = self.settings
        self.placement.pin_self()
        port = free_port()
        self.upstream_url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "benchmarks.apps", "upstream", "--port", str(port)]
        argv += ["--latency", str(s.latency), "--pace", str(s.pace)]
        self.upstream = spawn(argv, self.log("upstream"), env=self._env())
        specs = arm_specs(s)
        if any(spec.tracing for spec in specs.values()):
            # Beside the upstream, off the gateway's core: its decoding is not the arm's CPU.
            port = free_port()
            self.receiver_url = f"http://127.0.0.1:{port}"
            argv = [sys.executable, "-m", "benchmarks.apps", "otlp-receiver", "--port", str(port)]
            self.receiver = spawn(argv, self.log("otlp-receiver"), env=self._env())
            traced_log = self.log(TRACED)
            self.traced_log_start = traced_log.stat().st_size if traced_log.exists() else 0
            wait_ready(self.receiver_url, self.receiver, self.log("otlp-receiver"), 60)
        for name, spec in specs.items():
            arm = Arm(name, spec)
            if spec.kind == "direct":
                arm.url = self.upstream_url
            elif spec.kind == "litellm":
                litellm_arm.ensure_installed(self.say)
                arm.model = litellm_arm.MODEL
                arm.translated_model = litellm_arm.TRANSLATED_MODEL
                arm.key = litellm_arm.MASTER_KEY
            elif spec.kind == "portkey":
                portkey_arm.ensure_installed(self.say)
                arm.key = portkey_arm.KEY
                arm.translated_model = "bench"
                arm.extra_headers = portkey_arm.headers(self.upstream_url, translated=False)
                arm.translated_headers = portkey_arm.headers(self.upstream_url, translated=True)
            elif spec.kind == "stack":
                arm.model = "chat/bench"
                arm.translated_model = "messages/bench"
                arm.hold_model = f"chat/{HOLD_MODEL}"
            self.arms.append(arm)
        wait_ready(self.upstream_url, self.upstream, self.log("upstream"), 60)
        for arm in self.arms:
            self.launch(arm)
        for arm in self.arms:
            self.wait(arm)
        self.say(f"{len(self.arms)} arms up: {', '.join(a.name for a in self.arms)}")

    def launch(self, arm: Arm) -> None:
        """Start the arm's server on a fresh port (pinned to the gateway core)."""
        spec = arm.spec
        if spec.kind == "direct":
            return
        port = free_port()
        arm.url = f"http://127.0.0.1:{port}"
        if spec.kind == "litellm":
            config = litellm_arm.write_config(Path(self.workdir.name), self.upstream_url)
            argv, env = litellm_arm.command(config, port), litellm_arm.environment()
        elif spec.kind == "portkey":
            argv, env = portkey_arm.command(port), portkey_arm.environment()
        else:
            argv = [sys.executable, "-m", "benchmarks.apps", spec.app, "--port", str(port)]
            argv += ["--upstream", self.upstream_url]
            if spec.kind == "stack":
                argv += ["--client", spec.client, "--without", ",".join(spec.without)]
            if spec.tracing:
                argv += ["--tracing", self.receiver_url]
            argv += list(spec.extra)
            env = self._env(spec.root)
        arm.process = spawn(
            self.placement.gateway_prefix() + argv,
            self.log(arm.name),
            env=env,
            gateway_core=self.placement,
            cwd=spec.root or None,
        )

    def wait(self, arm: Arm) -> None:
        if arm.process is None:
            return
        probe = "/health/liveliness" if arm.spec.kind == "litellm" else ""
        timeout = 300 if arm.spec.kind == "litellm" else 60
        wait_ready(arm.url, arm.process, self.log(arm.name), timeout, probe)

    def log(self, name: str) -> Path:
        """Where a server's output goes: ``logs/`` beside the results, kept after the run
        (a gateway's warnings say why a figure came with errors)."""
        logs = self.settings.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return logs / (re.sub(r"[^\w.-]+", "-", name).strip("-") + ".log")

    def restart(self) -> None:
        """Fresh servers for every arm: a passthrough that does not watch for disconnects
        still holds the abandoned streams of the memory figure (and their upstream
        connections), which would weigh on everything measured after it."""
        for arm in self.arms:
            if arm.process is not None:
                stop(arm.process)
                self.launch(arm)
        for arm in self.arms:
            self.wait(arm)
        for arm in self.arms:
            self._warm(arm)
        self.say("arms restarted after the memory figure")

    def _env(self, root: str = "") -> dict[str, str]:
        """The environment of a process of the run: this checkout's packages first, or
        ``root``'s (another checkout's, for the baseline arm)."""
        env = dict(os.environ)
        root = root or str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        return env

    def stop(self) -> None:
        for arm in self.arms:
            stop(arm.process)  # a traced arm flushes its last spans as it shuts down
        if self.receiver is not None:
            with self.measuring("OTLP receiver's count"):
                self.results["otlp_received"] = self._received()
            stop(self.receiver)
        stop(self.upstream)

    def _received(self) -> dict[str, Any]:
        """What the OTLP receiver decoded over the run, beside the requests the traced arm
        answered: a batch processor whose queue overflows drops spans rather than export
        them, which would flatter its CPU figure."""
        with urllib.request.urlopen(self.receiver_url + "/stats", timeout=10) as response:
            received: dict[str, Any] = json.loads(response.read())
        traced = next(arm for arm in self.arms if arm.name == TRACED)
        received["requests_answered"] = traced.answered
        # The SDK's warning when its queue overflows, in what the arm wrote during this run
        # (server logs are appended to across runs).
        with self.log(TRACED).open("rb") as log:
            log.seek(self.traced_log_start)
            written = log.read().decode(errors="replace")
        received["drop_warnings"] = len(re.findall(r"[Qq]ueue is full", written))
        return received

    # measurements

    @contextlib.contextmanager
    def measuring(self, what: str, arm: Arm | None = None) -> Iterator[None]:
        """One measurement: if it fails, the failure and its cause (the exception, the arm's
        log tail) are recorded, the report shows the gap, and the run goes on.  Either way
        the results so far are written, so a crash loses only the measurement under way."""
        try:
            yield
        except Exception as exc:
            failure = {
                "what": what,
                "arm": arm.name if arm is not None else None,
                "cause": f"{type(exc).__name__}: {exc}"[:2000],
                "log_tail": log_tail(self.log(arm.name), 1500) if arm is not None else "",
            }
            self.results["failures"].append(failure)
            self.say(f"FAILED {what}: {failure['cause'][:300]}")
        finally:
            self.checkpoint()

    def checkpoint(self) -> None:
        """The results so far, in ``results.partial.json`` (replaced atomically)."""
        partial = self.settings.out / "results.partial.json"
        scratch = partial.with_suffix(".tmp")
        scratch.write_text(json.dumps(self.results, indent=1, default=str))
        scratch.replace(partial)

    @contextlib.contextmanager
    def alone(self, arm: Arm) -> Iterator[None]:
        """Every other arm's server stopped (SIGSTOP to its process group) while ``arm`` is
        measured, and continued after.  They all share the gateway core, and an idle server
        still wakes for its timers and background jobs (LiteLLM's proxy most of all): in a
        run with every arm up that showed as a third more CPU per request in whichever arm
        was measured, the floor included.  The upstream is never stopped."""
        others = [
            a.process
            for a in self.arms
            if a is not arm and a.process is not None and a.process.poll() is None
        ]
        stopped = []
        try:
            for process in others:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGSTOP)
                    stopped.append(process)
            yield
        finally:
            for process in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGCONT)

    def load(
        self, arm: Arm, connections: int, seconds: float, **body: bool
    ) -> tuple[LoadResult, float]:
        """One load run against ``arm``, the other arms stopped; also the arm's CPU seconds
        spent during it."""
        with self.alone(arm):
            before = procstat.cpu_seconds(arm.pid) if arm.pid else 0.0
            result = run_load(
                self.tool,
                arm.url + PATH,
                arm.body(**body),
                arm.headers(translated=body.get("translated", False)),
                connections,
                seconds,
            )
            if arm.pid:
                settle(arm.pid)
            cpu = (procstat.cpu_seconds(arm.pid) - before) if arm.pid else 0.0
            arm.answered += result.requests
            if result.errors:
                result.error_sample = sample_response(
                    arm.url + PATH,
                    arm.body(**body),
                    arm.headers(translated=body.get("translated", False)),
                )
        return result, cpu

    def _warm(self, arm: Arm) -> None:
        plain, stream = (0.2, 0.1) if self.settings.quick else (2.0, 0.5)
        results = [
            run_load("python", arm.url + PATH, arm.body(), arm.headers(), 4, plain),
            run_load("python", arm.url + PATH, arm.body(stream=True), arm.headers(), 2, stream),
        ]
        if arm.translated_model:
            results.append(
                run_load(
                    "python",
                    arm.url + PATH,
                    arm.body(stream=True, translated=True),
                    arm.headers(translated=True),
                    2,
                    stream,
                )
            )
        arm.answered += sum(result.requests for result in results)

    def warm_up(self) -> None:
        for arm in self.arms:
            self._warm(arm)
            time.sleep(0.2)
            if arm.pid:
                arm.rss_idle = procstat.rss_bytes(arm.pid)
        self.say(
            "warmed up; idle RSS "
            + ", ".join(f"{a.name} {a.rss_idle / 2**20:.1f} MiB" for a in self.arms if a.pid)
        )

    def rounds(self) -> None:
        s = self.settings
        total = s.rounds * len(s.concurrency) * len(self.arms)
        for r in range(s.rounds):
            order = self.arms[r % len(self.arms) :] + self.arms[: r % len(self.arms)]
            for c in s.concurrency:
                for arm in order:
                    self.step += 1
                    with self.measuring(f"throughput round {r + 1} c={c} {arm.name}", arm):
                        self._throughput(arm, c, r, total)
            # The translated path (an OpenAI Chat client, an Anthropic upstream) at 16
            # connections, for every arm that has one, peers included.
            for arm in order:
                if arm.translated_model:
                    with self.measuring(f"translated round {r + 1} c=16 {arm.name}", arm):
                        self._throughput(arm, 16, r, total, translated=True)
            self.stream_round(r)

    def _throughput(
        self, arm: Arm, c: int, r: int, total: int, *, translated: bool = False
    ) -> None:
        result, cpu = self.load(arm, c, self.settings.seconds, translated=translated)
        entry = asdict(result) | {"rps": result.rps, "cpu_s": cpu, "round": r}
        entry["cpu_us_per_request"] = (
            cpu / result.requests * 1e6 if arm.pid and result.requests else None
        )
        table = "throughput_translated" if translated else "throughput"
        self.results[table].setdefault(arm.name, {}).setdefault(str(c), []).append(entry)
        cpu_text = (
            f", {entry['cpu_us_per_request']:.0f} µs CPU/req" if entry["cpu_us_per_request"] else ""
        )
        path = " translated" if translated else ""
        self.say(
            f"[{self.step}/{total}] round {r + 1}{path} c={c:<3} {arm.name:<28} "
            f"{result.rps:9,.0f} req/s  p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms"
            f"{cpu_text}{f'  ERRORS {result.errors}' if result.errors else ''}"
        )
        if result.error_sample:
            self.say(f"    an answer after the errors: {result.error_sample}")

    def stream_round(self, r: int) -> None:
        for arm in self.arms:
            entry = self.results["streams"].setdefault(arm.name, {})
            kinds = [("same", False)] + ([("translated", True)] if arm.translated_model else [])
            for label, translated in kinds:
                with self.measuring(f"streams round {r + 1} {label} {arm.name}", arm):
                    self._stream(arm, entry, label, translated, r)

    def _stream(
        self, arm: Arm, entry: dict[str, Any], label: str, translated: bool, r: int
    ) -> None:
        s = self.settings
        with self.alone(arm):
            probe = asyncio.run(
                probe_streams(
                    arm.url + PATH,
                    arm.body(stream=True, translated=translated),
                    arm.headers(translated=translated),
                    s.stream_samples,
                )
            )
        arm.answered += s.stream_samples - probe.errors
        slot = entry.setdefault(
            label,
            {
                "ttft_ms": [],
                "events": [],
                "content_events": [],
                "errors": 0,
                "cpu_us_per_event": [],
            },
        )
        slot["ttft_ms"] += probe.ttft_ms
        slot["events"] += probe.events
        slot["content_events"] += probe.content_events
        slot["errors"] += probe.errors
        if probe.errors:
            sample = sample_response(
                arm.url + PATH,
                arm.body(stream=True, translated=translated),
                arm.headers(translated=translated),
            )
            slot.setdefault("error_samples", []).append(sample)
            self.say(f"    {probe.errors} streams failed; an answer after: {sample}")
        if arm.pid:
            result, cpu = self.load(arm, 16, s.stream_seconds, stream=True, translated=translated)
            if result.requests:
                slot["cpu_us_per_event"].append(cpu / (result.requests * EVENTS) * 1e6)
                slot.setdefault("streams_per_s", []).append(result.rps)
        ttft = statistics.median(probe.ttft_ms) if probe.ttft_ms else float("nan")
        cpu_text = (
            f", {slot['cpu_us_per_event'][-1]:.1f} µs CPU/event" if slot["cpu_us_per_event"] else ""
        )
        self.say(
            f"streams round {r + 1} {arm.name:<28} {label:<10} first text {ttft:.2f} ms, "
            f"{statistics.median(probe.content_events) if probe.content_events else 0:.0f} text events{cpu_text}"
        )

    def memory(self) -> None:
        for arm in self.arms:
            if arm.pid:
                with self.measuring(f"memory {arm.name}", arm):
                    self.results["memory"][arm.name] = asyncio.run(self._memory(arm))

    async def _memory(self, arm: Arm) -> dict[str, Any]:
        """RSS with 0, then N, then M streams held open at once (each past its first
        event), all counted from the same baseline."""
        assert arm.pid is not None
        held = HeldStreams()
        base = procstat.rss_bytes(arm.pid)
        entry: dict[str, Any] = {"rss_idle": arm.rss_idle, "rss_before": base, "held": {}}
        body = arm.body(stream=True, hold=True)
        try:
            opened, previous = 0, None
            for count in self.settings.held:
                await held.open(arm.url + PATH, body, arm.headers(), count - opened)
                opened = count
                await asyncio.sleep(0.2 if self.settings.quick else 1.0)  # let RSS settle
                rss = procstat.rss_bytes(arm.pid)
                opened_ok = count - held.failed
                per_stream = (rss - base) / opened_ok if opened_ok > 0 else math.nan
                figure = {"rss": rss, "failed": held.failed, "per_stream": per_stream}
                if previous is not None and opened_ok > previous[0]:
                    # What one more stream costs once the heap's slack is used up.
                    figure["marginal"] = (rss - previous[1]) / (opened_ok - previous[0])
                entry["held"][str(count)] = figure
                previous = (opened_ok, rss)
                self.say(
                    f"memory {arm.name:<28} {count} open streams: RSS {rss / 2**20:.1f} MiB, "
                    f"{per_stream / 1024:.1f} KiB per stream"
                    f"{f' ({held.failed} failed to open)' if held.failed else ''}"
                )
            arm.answered += opened - held.failed
        finally:
            await held.close()
        return entry

    def many_streams(self) -> None:
        """``open_streams`` streams held open past their first text on one worker with 1 s
        heartbeats: RSS per stream, how late the heartbeats come, whether any stream ends or
        starves, and 16 connections of plain requests beside them, their latency against the
        same load on the idle gateway.  The arm is a stack of its own (heartbeat 1 s, a pool
        large enough for every stream); the other arms are stopped meanwhile."""
        s = self.settings
        count = streams_allowed(s.open_streams)
        if count < s.open_streams:
            s.notes.append(
                f"{s.open_streams:,} open streams asked for, {count:,} measured: the open-file "
                f"hard limit here is {open_files_hard_limit():,} and may not be raised, and "
                "the gateway holds two descriptors a stream (client and upstream)"
            )
        base = next(a for a in self.arms if a.name == STACK)
        extra = ("--heartbeat", "1", "--max-connections", str(count + 200))
        arm = Arm(f"{STACK} (open streams)", Spec("stack", "stack", base.spec.client, (), extra))
        arm.model, arm.hold_model = base.model, base.hold_model
        self.launch(arm)
        try:
            self.wait(arm)
            self._warm(arm)
            assert arm.pid is not None
            with self.alone(arm):
                self.results["open_streams"] = self._many_streams(arm, count)
        finally:
            stop(arm.process)

    def _many_streams(self, arm: Arm, count: int) -> dict[str, Any]:
        s = self.settings
        assert arm.pid is not None
        url = arm.url + PATH
        idle = run_load(self.tool, url, arm.body(), arm.headers(), 16, s.seconds)
        rss_before = procstat.rss_bytes(arm.pid)
        window = s.seconds + (3 if s.quick else 10)
        argv = [sys.executable, "-m", "benchmarks.many_streams", "--url", url]
        argv += ["--body", arm.body(stream=True, hold=True).decode(), "--count", str(count)]
        argv += ["--seconds", str(window), "--interval", "1"]
        for name, value in arm.headers():
            argv += ["--header", f"{name}: {value}"]
        watcher = subprocess.Popen(argv, env=self._env(), stdout=subprocess.PIPE, text=True)
        try:
            assert watcher.stdout is not None
            ready = watcher.stdout.readline().split()
            if not ready or ready[0] != "ready":
                raise MeasurementError(f"the stream watcher did not start: {ready}")
            opened, failed = int(ready[1]), int(ready[2])
            time.sleep(0.2 if s.quick else 1.0)  # let RSS settle
            rss_open = procstat.rss_bytes(arm.pid)
            busy = run_load(self.tool, url, arm.body(), arm.headers(), 16, s.seconds)
            watched = json.loads(watcher.communicate(timeout=window + 120)[0])
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait()
        entry = {
            "streams": count,
            "opened": opened,
            "failed_to_open": failed,
            "rss_before": rss_before,
            "rss_open": rss_open,
            "kib_per_stream": (rss_open - rss_before) / opened / 1024 if opened else None,
            "watch": watched,
            "plain_idle": asdict(idle) | {"rps": idle.rps},
            "plain_busy": asdict(busy) | {"rps": busy.rps},
        }
        late = watched["lateness_ms"]
        self.say(
            f"{opened:,} open streams ({failed} failed): "
            f"{_num(entry['kib_per_stream'], '{:.1f}')} KiB each, heartbeat lateness p99 "
            f"{_num(late['p99'], '{:.1f}')} ms, {watched['starved']} starved, "
            f"{watched['ended']} ended; plain p99 {idle.p99_ms:.1f} ms idle, "
            f"{busy.p99_ms:.1f} ms beside them"
        )
        return entry

    def soak(self) -> None:
        s = self.settings
        arm = next(a for a in self.arms if a.name == STACK)
        samples: list[tuple[int, int]] = []
        done = 0
        slice_seconds = 1.0 if s.quick else 5.0
        samples.append((0, procstat.rss_bytes(arm.pid)))  # type: ignore[arg-type]
        while done < s.soak_requests:
            result, _ = self.load(arm, 16, slice_seconds)
            done += result.requests
            samples.append((done, procstat.rss_bytes(arm.pid)))  # type: ignore[arg-type]
            self.say(
                f"soak {arm.name}: {done:,}/{s.soak_requests:,} requests, RSS {samples[-1][1] / 2**20:.1f} MiB"
            )
        # Growth is counted from the first slice on: the first requests fill caches and pools.
        first = samples[1][1] if len(samples) > 2 else samples[0][1]
        self.results["soak"] = {
            "arm": arm.name,
            "requests": done,
            "samples": samples,
            "growth_pct": (samples[-1][1] - first) / first * 100,
        }

    def profile(self) -> None:
        """py-spy on the stack while it serves plain requests, then streams; a summary of
        where the time goes goes into the report."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            self.settings.notes.append("--profile: py-spy not found; no profile")
            return
        arm = next(a for a in self.arms if a.name == STACK)
        profiles = {}
        for label, body in (
            ("plain", {}),
            ("stream", {"stream": True}),
            ("translated", {"stream": True, "translated": True}),
        ):
            out = self.settings.out / f"profile-{label}.txt"
            seconds = 2 if self.settings.quick else 10
            spy_proc = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(arm.pid),
                    "--duration",
                    str(seconds + 1),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(0.5)
            self.load(arm, 16, seconds, **body)
            spy_proc.wait(60)
            if out.exists():
                profiles[label] = report.summarize_profile(out.read_text())
                self.say(f"profile {label}: {out}")
            else:
                err = spy_proc.stderr.read().decode(errors="replace") if spy_proc.stderr else ""
                self.settings.notes.append(f"py-spy failed: {err.strip()[:300]}")
        self.results["profile"] = profiles

    def inprocess(self) -> None:
        """The stack arms' own Python cost, with no sockets (``inprocess.py``), pinned like
        the served arms, interleaved over the rounds."""
        s = self.settings
        arms = [a for a in self.arms if a.spec.kind == "stack" and "(" not in a.name]
        requests = 300 if s.quick else 3000
        out: dict[str, dict[str, list[float]]] = {}
        for r in range(s.rounds):
            for arm in arms:
                with self.measuring(f"in-process round {r + 1} {arm.name}"):
                    self._inprocess(arm, r, requests, out)
        self.results["inprocess"] = out

    def _inprocess(
        self, arm: Arm, r: int, requests: int, out: dict[str, dict[str, list[float]]]
    ) -> None:
        argv = [sys.executable, "-m", "benchmarks.inprocess", "--requests", str(requests)]
        argv += ["--without", ",".join(arm.spec.without)]
        completed = subprocess.run(
            self.placement.gateway_prefix() + argv,
            env=self._env(arm.spec.root),
            cwd=arm.spec.root or None,
            capture_output=True,
            text=True,
        )
        if completed.returncode != 0:
            raise MeasurementError(
                f"benchmarks.inprocess exited with status {completed.returncode}: "
                f"{completed.stderr.strip()[-800:]}"
            )
        figures = json.loads(completed.stdout)
        for key, value in figures.items():
            out.setdefault(arm.name, {}).setdefault(key, []).append(value)
        self.say(
            f"in-process round {r + 1} {arm.name:<28} "
            f"{figures['plain_us_per_request']:.0f} µs/req, "
            f"{figures['same_us_per_event']:.1f} / {figures['translated_us_per_event']:.1f}"
            " µs/event (same / translated)"
        )

    def start_layers(self) -> dict[str, concurrent.futures.Future[tuple[str, str, int]]]:
        """The new layers' own figures, in process and pinned like the served arms, each
        from its module's command: tracing (``benchmarks.tracing``: off, on exporting
        OTLP/HTTP to a local receiver, on at 10 % sampling), the field cache with its
        built-in rules on a reasoning tool conversation (``benchmarks.field_cache``), and
        what pricing adds (``benchmarks.cost``), and what an open stream holds, by who
        allocated it (``benchmarks.stream_memory``).  Each measures its arms side by side in
        rounds of its own.  A full run runs them one at a time, so that none disturbs
        another's figure; ``--quick`` only checks that they run, so it runs them all at
        once, beside the rest of the run (the tracing module mostly waits)."""
        quick = self.settings.quick
        # A full run takes each module's own defaults (requests, rounds).
        commands = {
            "tracing": ["--requests", "100", "--rounds", "1"] if quick else [],
            "field_cache": ["--requests", "200", "--rounds", "1", "--events", "50"]
            if quick
            else [],
            "cost": ["--requests", "200", "--rounds", "1", "--calls", "5000"] if quick else [],
            "stream_memory": ["--streams", "50"] if quick else [],
        }

        def run(module: str) -> tuple[str, str, int]:
            argv = [sys.executable, "-m", f"benchmarks.{module}", *commands[module]]
            completed = subprocess.run(
                self.placement.gateway_prefix() + argv,
                env=self._env(),
                capture_output=True,
                text=True,
            )
            return completed.stdout, completed.stderr, completed.returncode

        pool = concurrent.futures.ThreadPoolExecutor(len(commands) if quick else 1)
        futures = {module: pool.submit(run, module) for module in commands}
        pool.shutdown(wait=False)
        return futures

    def collect_layers(
        self, futures: dict[str, concurrent.futures.Future[tuple[str, str, int]]]
    ) -> None:
        for module, future in futures.items():
            with self.measuring(f"in-process {module}"):
                out, err, status = future.result()
                if status != 0:
                    raise MeasurementError(
                        f"benchmarks.{module} exited with status {status}: {err.strip()[-800:]}"
                    )
                figures = json.loads(out)
                self.results.setdefault("layers", {})[module] = figures
                self.say(f"in-process {module}: {json.dumps(figures)[:300]}")

    def meta(self) -> dict[str, Any]:
        http, loop = server_stack()
        versions = {}
        for dist in ("asgi-rotator", "uvicorn", "httpx", "httpx2", "aiohttp", "msgspec"):
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                versions[dist] = importlib.metadata.version(dist)
        if self.settings.with_litellm:
            versions["litellm"] = litellm_arm.version()
        if any(a.spec.kind == "portkey" for a in self.arms):
            versions["@portkey-ai/gateway"] = portkey_arm.version()
        cpu = "unknown"
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        s = self.settings
        return {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "mode": "quick" if s.quick else "full",
            "python": platform.python_version(),
            "cpu": cpu,
            "cores": os.cpu_count(),
            "placement": self.placement.describe(),
            "load_tool": self.tool,
            "server": f"uvicorn ({http}, {loop})",
            "versions": versions,
            "client": next(a.spec.client for a in self.arms if a.name == STACK),
            "rounds": s.rounds,
            "concurrency": list(s.concurrency),
            "seconds": s.seconds,
            "stream_events": EVENTS,
            "latency": s.latency,
            "pace": s.pace,
            "held": list(s.held),
            "open_streams": s.open_streams,
            "soak_requests": s.soak_requests,
            "arms": {a.name: asdict(a.spec) for a in self.arms},
            "notes": s.notes,
            "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
        }

    def execute(self) -> dict[str, Any]:
        s = self.settings
        s.out.mkdir(parents=True, exist_ok=True)
        self.say(f"load generator: {self.tool}; {self.placement.describe()}")
        if self.tool == "python":
            s.notes.append(
                "wrk not found: load from the Python generator, which may cap the fastest arms"
            )
        layers = self.start_layers() if s.quick else None
        try:
            self.start()
            self.warm_up()
            # Memory first: the rounds' bursts leave free heap behind that the first held
            # streams would fill without growing RSS, flattering the per-stream figure.
            self.memory()
            self.restart()
            self.rounds()
            if s.open_streams:
                with self.measuring(f"{s.open_streams} open streams"):
                    self.many_streams()
            stack = next((a for a in self.arms if a.name == STACK), None)
            with self.measuring("soak", stack):
                self.soak()
            if s.profile:
                with self.measuring("profile", stack):
                    self.profile()
        finally:
            self.stop()
            self.workdir.cleanup()
        self.inprocess()
        self.collect_layers(layers or self.start_layers())
        self.results["meta"] = self.meta()
        return self.results


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def settings_from(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run that checks the harness works (seconds, not minutes)",
    )
    parser.add_argument("--rounds", type=int, help="rounds over all arms (default 3; quick 1)")
    parser.add_argument(
        "--seconds", type=float, help="seconds per load measurement (default 5; quick 1)"
    )
    parser.add_argument("--concurrency", help="comma-separated connection counts (default 1,16,64)")
    parser.add_argument("--soak", type=int, help="requests in the memory soak (default 100000)")
    parser.add_argument(
        "--open-streams",
        type=int,
        help="streams held open at once for the heartbeat figure (default 10000; quick 200; 0: skip)",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="upstream seconds before headers"
    )
    parser.add_argument(
        "--pace", type=float, default=0.0, help="upstream seconds between stream events"
    )
    parser.add_argument(
        "--load",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (auto: wrk when installed)",
    )
    parser.add_argument(
        "--client", default="auto", help="the stack's upstream client (auto: fastest installed)"
    )
    parser.add_argument("--arms", help="comma-separated arm names to measure (direct is always in)")
    parser.add_argument(
        "--baseline",
        type=checkout_dir,
        metavar="DIR",
        help=f"another checkout of asgi-rotator (git worktree add DIR <commit>), measured as "
        f"the arm {BASELINE!r} beside this one",
    )
    parser.add_argument(
        "--with-litellm",
        action="store_true",
        help="add LiteLLM's proxy (installed into benchmarks/.venv-litellm on first use)",
    )
    parser.add_argument(
        "--with-portkey",
        action="store_true",
        help="add Portkey's open-source gateway (Node.js; installed into benchmarks/.portkey "
        "on first use; skipped, with a note, when node or npm is missing)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the stack and summarise where the time goes"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help=f"output directory (default {RESULTS})"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    concurrency = (
        tuple(int(c) for c in args.concurrency.split(","))
        if args.concurrency
        else ((16,) if quick else (1, 16, 64))
    )
    return Settings(
        quick=quick,
        rounds=args.rounds or (1 if quick else 3),
        concurrency=concurrency,
        seconds=args.seconds or (1.0 if quick else 5.0),
        stream_samples=10 if quick else 100,
        stream_seconds=args.seconds or (1.0 if quick else 5.0),
        held=(10, 20) if quick else (100, 500),
        open_streams=args.open_streams
        if args.open_streams is not None
        else (200 if quick else 10_000),
        soak_requests=args.soak or (1000 if quick else 100_000),
        latency=args.latency,
        pace=args.pace,
        load=args.load,
        client=args.client,
        with_litellm=args.with_litellm,
        with_portkey=args.with_portkey,
        profile=args.profile,
        arms=tuple(args.arms.split(",")) if args.arms else (),
        baseline=args.baseline,
        out=args.out,
    )


def run_in_checkout(checkout: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``argv`` run in ``checkout`` with its own packages first and hash randomisation fixed
    (so a count is the same from run to run), its output captured; raises when it fails."""
    completed = subprocess.run(
        argv,
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout), "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the counted run failed: {completed.stderr[-800:]}")
    return completed


def checkout_dir(value: str) -> Path:
    """``value`` as a checkout of asgi-rotator (for ``--baseline``), or an argparse error."""
    path = Path(value).resolve()
    if not (path / "asgi_rotator").is_dir() or not (path / "benchmarks").is_dir():
        raise argparse.ArgumentTypeError(
            f"{value}: not a checkout of asgi-rotator (no asgi_rotator/ and benchmarks/)"
        )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_from(argv)
    results = Run(settings).execute()
    paths = report.write(results, settings.out)
    (settings.out / "results.partial.json").unlink(missing_ok=True)  # the whole is written
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
