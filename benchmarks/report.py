"""From a run's measurements to ``results.json``, ``results.md`` and PNG charts.

Every figure is the median over the rounds, and is shown beside its ratio to the floor (the
bare aiohttp passthrough, or httpx's when aiohttp is not installed) and to LiteLLM, both
measured in the same run.  Charts need matplotlib (``asgi-rotator[bench]``); without it
the markdown and JSON are still written and the report says the charts were skipped.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.upstream import EVENTS

STACK = "asgi-rotator"
TRACED = f"{STACK} (tracing)"
DASH = "\u2013"  # an en dash marks what was not measured


def _median(values: list[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def floor_name(results: dict[str, Any]) -> str | None:
    arms = results["throughput"]
    for name in ("floor-aiohttp", "floor-httpx2", "floor-httpx"):
        if name in arms:
            return name
    return None


def figures(results: dict[str, Any]) -> dict[str, Any]:
    """The medians every table, chart and goal is made from."""
    out: dict[str, Any] = {
        "arms": _throughput(results["throughput"]),
        "translated": _throughput(results.get("throughput_translated", {})),
    }
    direct = out["arms"].get("direct", {})
    for row in out["arms"].values():
        for c, cell in row.items():
            base = direct.get(c, {})
            cell["p50_added_ms"] = cell["p50_ms"] - base.get("p50_ms", math.nan)
            cell["p99_added_ms"] = cell["p99_ms"] - base.get("p99_ms", math.nan)
    streams: dict[str, Any] = {}
    direct_ttft = _median(results["streams"].get("direct", {}).get("same", {}).get("ttft_ms", []))
    for arm, kinds in results["streams"].items():
        entry: dict[str, Any] = {}
        for kind, slot in kinds.items():
            ttft = _median(slot["ttft_ms"])
            entry[kind] = {
                "ttft_ms": ttft,
                "ttft_added_ms": ttft - direct_ttft,
                # A stream that delivered no text (every one failed: Portkey's) has no
                # per-event cost to show, only its errors.
                "cpu_us_per_event": _median(slot["cpu_us_per_event"])
                if any(slot["content_events"])
                else math.nan,
                "events": sorted(set(slot["events"])),
                "content_events": sorted(set(slot["content_events"])),
                "coalesced": any(n != EVENTS for n in slot["content_events"]) or slot["errors"] > 0,
                "errors": slot["errors"],
            }
        streams[arm] = entry
    out["streams"] = streams
    return out


def _throughput(table: dict[str, Any]) -> dict[str, Any]:
    arms: dict[str, Any] = {}
    for arm, by_c in table.items():
        row: dict[str, Any] = {}
        for c, runs in by_c.items():
            row[c] = {
                "rps": _median([r["rps"] for r in runs]),
                "p50_ms": _median([r["p50_ms"] for r in runs]),
                "p99_ms": _median([r["p99_ms"] for r in runs]),
                "cpu_us": _median(
                    [r["cpu_us_per_request"] for r in runs if r["cpu_us_per_request"]]
                ),
                "errors": sum(r["errors"] for r in runs),
            }
        arms[arm] = row
    return arms


def _ratio(value: float, base: float | None) -> float:
    if base is None or not base or math.isnan(base) or math.isnan(value):
        return math.nan
    return value / base


def goals(results: dict[str, Any], fig: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) for the goals of issue 22 in its order, then the earlier ones
    still held (no coalescing, memory at the held-stream counts, cost lookup); met is None
    when not measured."""
    arms = fig["arms"]
    floor = floor_name(results)
    stack = arms.get(STACK, {}).get("16", {})
    floor16 = arms.get(floor, {}).get("16", {}) if floor else {}
    translated = fig.get("translated", {})
    streams = fig["streams"].get(STACK, {})
    layers = results.get("layers", {})
    rows: list[tuple[str, str, bool | None]] = []

    def add(goal: str, value: float, limit: float, fmt: str, *, at_least: bool) -> None:
        if value is None or math.isnan(value):
            rows.append((goal, "not measured", None))
        else:
            rows.append((goal, fmt.format(value), value >= limit if at_least else value <= limit))

    add(
        f"throughput at 16 connections >= 50% of {floor or 'the floor'}",
        _ratio(stack.get("rps", math.nan), floor16.get("rps")) * 100,
        50,
        "{:.0f}%",
        at_least=True,
    )
    add(
        f"CPU per request <= 2x {floor or 'the floor'}'s",
        _ratio(stack.get("cpu_us", math.nan), floor16.get("cpu_us")),
        2,
        "{:.2f}x",
        at_least=False,
    )
    for peer, times, share in (("litellm", 25, None), ("portkey", 4, 4)):
        for path, table in (("same protocol", arms), ("translated", translated)):
            ours = table.get(STACK, {}).get("16", {})
            theirs = table.get(peer, {}).get("16", {})
            add(
                f"throughput at 16 connections >= {times}x {peer}, {path}",
                _ratio(ours.get("rps", math.nan), theirs.get("rps")),
                times,
                "{:.1f}x",
                at_least=True,
            )
        if share is not None:
            for path, table in (("same protocol", arms), ("translated", translated)):
                ours = table.get(STACK, {}).get("16", {})
                theirs = table.get(peer, {}).get("16", {})
                add(
                    f"CPU per request <= 1/{share} of {peer}'s, {path}",
                    _ratio(ours.get("cpu_us", math.nan), theirs.get("cpu_us")),
                    1 / share,
                    "{:.2f}x",
                    at_least=False,
                )
    add(
        "streams: added time to first text <= 0.5 ms",
        streams.get("same", {}).get("ttft_added_ms", math.nan),
        0.5,
        "{:.2f} ms",
        at_least=False,
    )
    add(
        "streams: CPU per event <= 15 µs, same protocol",
        streams.get("same", {}).get("cpu_us_per_event", math.nan),
        15,
        "{:.1f} µs",
        at_least=False,
    )
    add(
        "streams: CPU per event <= 20 µs, translated",
        streams.get("translated", {}).get("cpu_us_per_event", math.nan),
        20,
        "{:.1f} µs",
        at_least=False,
    )
    traced = arms.get(TRACED, {}).get("16", {})
    add(
        "tracing on: CPU per plain request <= +25% over tracing off (served, c=16)",
        (_ratio(traced.get("cpu_us", math.nan), stack.get("cpu_us")) - 1) * 100,
        25,
        "{:+.0f}%",
        at_least=False,
    )
    tracing = layers.get("tracing") or {}
    plain = tracing.get("plain_us_per_request", {})
    add(
        "tracing on: CPU per plain request <= +25% over tracing off (in-process)",
        (plain.get("on: ratio", math.nan) - 1) * 100,
        25,
        "{:+.0f}%",
        at_least=False,
    )
    add(
        "tracing on: CPU per streamed event <= +3 µs (in-process, marginal)",
        tracing.get("stream_us_per_event", {}).get("on: added", math.nan),
        3,
        "{:+.1f} µs",
        at_least=False,
    )
    cache = layers.get("field_cache") or {}
    add(
        "field cache: <= 10 µs per request with no rule applying (in-process)",
        cache.get("no_rule_us_per_request", math.nan),
        10,
        "{:.1f} µs",
        at_least=False,
    )
    per_event = {
        "Anthropic": cache.get("rule_us_per_event"),
        "Gemini": cache.get("gemini_rule_us_per_event"),
        "Gemini, text kept": cache.get("text_rule_us_per_event"),
    }
    measured = {k: v for k, v in per_event.items() if v is not None}
    if measured:
        worst = max(measured.values())
        rows.append(
            (
                "field cache: <= 2 µs per event when a rule applies (in-process)",
                ", ".join(f"{k} {v:.2f} µs" for k, v in measured.items()),
                worst <= 2,
            )
        )
    else:
        rows.append(("field cache: <= 2 µs per event when a rule applies", "not measured", None))
    many = results.get("open_streams") or {}
    count = f"{many['opened']:,} open streams" if many else "10,000 open streams"
    add(
        f"memory <= 30 KiB per stream at {count}",
        (many.get("kib_per_stream") or math.nan) if many else math.nan,
        30,
        "{:.1f} KiB",
        at_least=False,
    )
    add(
        f"heartbeat lateness p99 <= 100 ms at {count}",
        (many["watch"]["lateness_ms"].get("p99") or math.nan) if many else math.nan,
        100,
        "{:.1f} ms",
        at_least=False,
    )
    if many:
        rows.append(
            (
                f"no stream errors or starves at {count}, 16 connections of plain requests beside",
                f"{many['failed_to_open']} failed to open, {many['watch']['ended']} ended, "
                f"{many['watch']['starved']} starved",
                not (many["failed_to_open"] or many["watch"]["ended"] or many["watch"]["starved"]),
            )
        )
    soak = results.get("soak", {})
    add(
        f"soak: RSS growth over {soak.get('requests', 0):,} requests < 2%",
        soak.get("growth_pct", math.nan),
        2,
        "{:+.2f}%",
        at_least=False,
    )
    # Earlier issues' goals, still held.
    if streams:
        coalesced = any(k.get("coalesced") for k in streams.values())
        detail = ", ".join(f"{kind}: {k['content_events']}" for kind, k in streams.items())
        rows.append((f"no coalescing ({EVENTS} text events in = out)", detail, not coalesced))
    memory = results["memory"].get(STACK, {}).get("held", {})
    per_stream = (
        max(
            (v for m in memory.values() for v in (m["per_stream"], m.get("marginal", 0.0))),
            default=math.nan,
        )
        / 1024
    )
    held = ", ".join(memory) or "-"
    add(
        f"memory <= 30 KiB per open stream at {held} held",
        per_stream,
        30,
        "{:.1f} KiB",
        at_least=False,
    )
    cost = layers.get("cost") or {}
    work = cost.get("pricing_work_us", math.nan)
    if not math.isnan(work):
        rows.append(
            (
                "cost lookup: pricing adds <= 5 µs per request (in-process; the work alone)",
                f"{work:.1f} µs (two stacks differ by {cost['stack_difference_us']:+.1f} µs, "
                f"A/A spread {cost['aa_spread_us']:.1f})",
                work <= 5,
            )
        )
    else:
        rows.append(("cost lookup: pricing adds <= 5 µs per request", "not measured", None))
    return rows


def layer_costs(results: dict[str, Any], fig: dict[str, Any]) -> dict[str, dict[str, float]]:
    """What switching each layer off saves: full stack minus ``without <layer>``."""
    arms, streams = fig["arms"], fig["streams"]
    full = arms.get(STACK, {}).get("16", {})
    full_streams = streams.get(STACK, {})
    full_memory = _memory_per_stream(results["memory"].get(STACK))
    costs = {}
    for arm in arms:
        if not arm.startswith("without "):
            continue
        off = arms[arm].get("16", {})
        costs[arm.removeprefix("without ")] = {
            "cpu_us": full.get("cpu_us", math.nan) - off.get("cpu_us", math.nan),
            "event_same": full_streams.get("same", {}).get("cpu_us_per_event", math.nan)
            - streams.get(arm, {}).get("same", {}).get("cpu_us_per_event", math.nan),
            "event_translated": full_streams.get("translated", {}).get("cpu_us_per_event", math.nan)
            - streams.get(arm, {}).get("translated", {}).get("cpu_us_per_event", math.nan),
            "kib_per_stream": (full_memory - _memory_per_stream(results["memory"].get(arm))) / 1024,
        }
    return costs


def _memory_per_stream(entry: dict[str, Any] | None) -> float:
    """Bytes per open stream at the largest count measured."""
    if not entry or not entry["held"]:
        return math.nan
    last = entry["held"][max(entry["held"], key=int)]
    value = last["per_stream"]
    return math.nan if value is None else float(value)


def _fmt(value: float, spec: str = "{:,.0f}") -> str:
    return DASH if value is None or math.isnan(value) else spec.format(value)


def markdown(results: dict[str, Any], fig: dict[str, Any], charts: list[str]) -> str:
    meta = results["meta"]
    arms = fig["arms"]
    floor = floor_name(results)
    concurrency = [str(c) for c in meta["concurrency"]]
    litellm = arms.get("litellm", {})
    lines = [
        f"# asgi-rotator benchmarks ({meta['mode']} run, {meta['date']})",
        "",
        f"- Command: `{meta['command']}`",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores; {meta['placement']}",
        f"- Load generator: **{meta['load_tool']}**; servers: {meta['server']}; Python {meta['python']}",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
        f"- Stack upstream client: **{meta['client']}**; {meta['rounds']} round(s) x {meta['seconds']:g} s per "
        f"measurement; upstream latency {meta['latency']:g} s, pace {meta['pace']:g} s; streams of "
        f"{meta['stream_events']} text events",
        f"- Floor (ratios' base): **{floor}**; medians over rounds",
    ]
    lines += [f"- Note: {note}" for note in meta["notes"]]
    failures = results.get("failures", [])
    if failures:
        lines += [
            "",
            "## Failed measurements",
            "",
            f"{len(failures)} measurement(s) failed; the figures below lack them (the run went on).",
            "",
            "| measurement | cause |",
            "|---|---|",
        ]
        for failure in failures:
            cause = failure["cause"].replace("|", "\\|").replace("\n", " ")[:300]
            lines.append(f"| {failure['what']} | {cause} |")
        lines += ["", "The arms' log tails are in `results.json` (`failures`)."]
    lines += ["", "## Goals", "", "| goal | measured | met |", "|---|---|---|"]
    rows = goals(results, fig)
    for goal, measured, met in rows:
        lines.append(
            f"| {goal} | {measured} | {'yes' if met else 'no' if met is False else DASH} |"
        )
    lines += _missed(results, fig, rows)

    lines += [
        "",
        "## Non-streamed requests",
        "",
        "| arm | "
        + " | ".join(f"req/s c={c}" for c in concurrency)
        + " | x floor c=16 | x LiteLLM c=16 | x Portkey c=16 | CPU µs/req | x floor CPU |",
        "|---|" + "---:|" * (len(concurrency) + 5),
    ]
    portkey = arms.get("portkey", {})
    floor16 = arms.get(floor, {}).get("16", {}) if floor else {}
    for arm, row in arms.items():
        c16 = row.get("16", {})
        cells = [_fmt(row.get(c, {}).get("rps", math.nan)) for c in concurrency]
        cells.append(_fmt(_ratio(c16.get("rps", math.nan), floor16.get("rps")), "{:.2f}"))
        cells.append(
            _fmt(_ratio(c16.get("rps", math.nan), litellm.get("16", {}).get("rps")), "{:.1f}")
        )
        cells.append(
            _fmt(_ratio(c16.get("rps", math.nan), portkey.get("16", {}).get("rps")), "{:.1f}")
        )
        cells.append(_fmt(c16.get("cpu_us", math.nan)))
        cells.append(_fmt(_ratio(c16.get("cpu_us", math.nan), floor16.get("cpu_us")), "{:.2f}"))
        errors = sum(cell["errors"] for cell in row.values())
        name = f"{arm} (**{errors} errors**)" if errors else arm
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    many = results.get("open_streams") or {}
    if many:
        late, watch = many["watch"]["lateness_ms"], many["watch"]
        idle, busy = many["plain_idle"], many["plain_busy"]
        lines += [
            "",
            f"## {many['opened']:,} streams open on one worker",
            "",
            f"Held past their first text with 1 s heartbeats, watched for {watch['seconds']:g} s "
            f"({watch['heartbeats']:,} heartbeats; open-file limit {watch['open_files_limit']:,}). "
            "Lateness is a heartbeat's gap minus the interval, as seen by one Python client "
            "process reading every stream, so it includes that process's own scheduling.",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| RSS per stream | {_fmt(many.get('kib_per_stream') or math.nan, '{:.1f}')} KiB |",
            f"| heartbeat lateness p50 / p99 / max | {_fmt(late['p50'] or math.nan, '{:.1f}')} / "
            f"{_fmt(late['p99'] or math.nan, '{:.1f}')} / {_fmt(late['max'] or math.nan, '{:.1f}')} ms |",
            f"| failed to open / ended / starved | {many['failed_to_open']} / {watch['ended']} / "
            f"{watch['starved']} |",
            f"| plain requests, c=16, idle gateway: req/s, p50, p99 | {_fmt(idle['rps'])}, "
            f"{idle['p50_ms']:.2f} ms, {idle['p99_ms']:.2f} ms |",
            f"| the same beside the open streams | {_fmt(busy['rps'])}, {busy['p50_ms']:.2f} ms, "
            f"{busy['p99_ms']:.2f} ms |",
        ]

    translated = fig.get("translated", {})
    if translated:
        lines += [
            "",
            "## Translated requests (OpenAI Chat client, Anthropic-protocol upstream), c=16",
            "",
            "| arm | req/s | x LiteLLM | x Portkey | CPU µs/req | x Portkey CPU |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        litellm_t = translated.get("litellm", {}).get("16", {})
        portkey_t = translated.get("portkey", {}).get("16", {})
        for arm, row in translated.items():
            c16 = row.get("16", {})
            rps, cpu = c16.get("rps", math.nan), c16.get("cpu_us", math.nan)
            cells = [
                _fmt(rps),
                _fmt(_ratio(rps, litellm_t.get("rps")), "{:.1f}"),
                _fmt(_ratio(rps, portkey_t.get("rps")), "{:.1f}"),
                _fmt(cpu),
                _fmt(_ratio(cpu, portkey_t.get("cpu_us")), "{:.2f}"),
            ]
            errors = c16.get("errors", 0)
            name = f"{arm} (**{errors} errors**)" if errors else arm
            lines.append(f"| {name} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "Latency added over direct (ms, p50 / p99):",
        "",
        "| arm | " + " | ".join(f"c={c}" for c in concurrency) + " |",
        "|---|" + "---:|" * len(concurrency),
    ]
    for arm, row in arms.items():
        if arm == "direct":
            continue
        cells = [
            f"{_fmt(row.get(c, {}).get('p50_added_ms', math.nan), '{:.2f}')} / "
            f"{_fmt(row.get(c, {}).get('p99_added_ms', math.nan), '{:.2f}')}"
            for c in concurrency
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")

    layers = layer_costs(results, fig)
    if layers:
        lines += [
            "",
            "## What each layer costs",
            "",
            "The whole stack minus the stack without that layer (medians, c=16).",
            "",
            "| layer | CPU µs/req | CPU µs/event same | CPU µs/event translated | KiB per open stream |",
            "|---|---:|---:|---:|---:|",
        ]
        for layer, cost in layers.items():
            lines.append(
                f"| {layer} | {_fmt(cost['cpu_us'], '{:.0f}')} | {_fmt(cost['event_same'], '{:.1f}')} | "
                f"{_fmt(cost['event_translated'], '{:.1f}')} | {_fmt(cost['kib_per_stream'], '{:.1f}')} |"
            )

    inprocess = results.get("inprocess")
    if inprocess:
        full = {k: _median(v) for k, v in inprocess.get(STACK, {}).items()}
        lines += [
            "",
            "## The stack's own Python cost (in-process, no sockets)",
            "",
            "`benchmarks/inprocess.py`: the stack called directly, its upstream client answering "
            "from fixed bytes at once; no server, HTTP client or kernel, so this is what our "
            "layers, codecs and the event loop spend, and what a layer adds is its difference.",
            "",
            "| arm | CPU µs/req | CPU µs/event same | CPU µs/event translated | layer costs µs/req, /event |",
            "|---|---:|---:|---:|---:|",
        ]
        for arm, values in inprocess.items():
            m = {k: _median(v) for k, v in values.items()}
            added = DASH
            if arm != STACK and full:
                added = (
                    f"{full['plain_us_per_request'] - m['plain_us_per_request']:.0f}, "
                    f"{full['same_us_per_event'] - m['same_us_per_event']:.1f}"
                )
            lines.append(
                f"| {arm} | {m['plain_us_per_request']:.0f} | {m['same_us_per_event']:.1f} | "
                f"{m['translated_us_per_event']:.1f} | {added} |"
            )

    lines += _new_layers(results, fig)

    lines += [
        "",
        f"## Streams ({EVENTS} text events each)",
        "",
        "| arm | first text ms | added ms | CPU µs/event same | x floor | CPU µs/event translated "
        "| events out (same) | text events out same / translated |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    floor_cpu = (
        fig["streams"].get(floor, {}).get("same", {}).get("cpu_us_per_event") if floor else None
    )
    for arm, kinds in fig["streams"].items():
        same = kinds.get("same", {})
        tr = kinds.get("translated", {})
        text = f"{same.get('content_events')} / {tr.get('content_events', DASH)}"
        errors = sum(kind.get("errors", 0) for kind in kinds.values())
        name = f"{arm} (**{errors} streams failed**)" if errors else arm
        lines.append(
            f"| {name} | {_fmt(same.get('ttft_ms', math.nan), '{:.2f}')} | "
            f"{_fmt(same.get('ttft_added_ms', math.nan), '{:.2f}')} | "
            f"{_fmt(same.get('cpu_us_per_event', math.nan), '{:.1f}')} | "
            f"{_fmt(_ratio(same.get('cpu_us_per_event', math.nan), floor_cpu), '{:.2f}')} | "
            f"{_fmt(tr.get('cpu_us_per_event', math.nan), '{:.1f}')} | {same.get('events')} | {text} |"
        )

    lines += [
        "",
        "## Memory",
        "",
        "Resident memory per open stream: (RSS with N streams held open past their first text"
        " - RSS before) / N, and the marginal cost of the streams between the two counts.",
        "",
        "| arm | RSS idle MiB | "
        + " | ".join(f"KiB per stream, {n} open" for n in meta["held"])
        + " | marginal KiB per stream |",
        "|---|---:|" + "---:|" * (len(meta["held"]) + 1),
    ]
    for arm, entry in results["memory"].items():
        held = entry["held"]
        cells = [
            _fmt(held.get(str(n), {}).get("per_stream", math.nan) / 1024, "{:.1f}")
            + (f" ({held[str(n)]['failed']} failed)" if held.get(str(n), {}).get("failed") else "")
            for n in meta["held"]
        ]
        cells.append(
            _fmt(held.get(str(meta["held"][-1]), {}).get("marginal", math.nan) / 1024, "{:.1f}")
        )
        lines.append(f"| {arm} | {entry['rss_idle'] / 2**20:.1f} | " + " | ".join(cells) + " |")
    held_memory = _held_memory(results)
    if held_memory:
        lines += ["", f"{held_memory} (`benchmarks/stream_memory.py`)"]
    soak = results.get("soak")
    if soak:
        samples = soak["samples"]
        lines += [
            "",
            f"Soak ({soak['arm']}, {soak['requests']:,} requests at 16 connections): RSS "
            f"{samples[1][1] / 2**20:.1f} MiB after the first slice, {samples[-1][1] / 2**20:.1f} MiB "
            f"at the end: **{soak['growth_pct']:+.2f}%**.",
        ]

    profile = results.get("profile")
    if profile:
        lines += ["", "## Where the time goes (py-spy, the stack at 16 connections)", ""]
        for label, summary in profile.items():
            lines += [f"### {label}", "", "| self % | function |", "|---:|---|"]
            lines += [f"| {pct:.1f} | `{name}` |" for name, pct in summary["self"][:15]]
            lines += ["", "| inclusive % | function (asgi_rotator) |", "|---:|---|"]
            lines += [f"| {pct:.1f} | `{name}` |" for name, pct in summary["ours"][:15]]
            lines.append("")
    if charts:
        lines += ["", "## Charts", ""] + [f"![{Path(c).stem}]({Path(c).name})" for c in charts]
    else:
        lines += [
            "",
            "Charts skipped: matplotlib is not installed (`pip install 'asgi-rotator[bench]'`).",
        ]
    return "\n".join(lines) + "\n"


# Which profile explains a goal about what (matched on the goal's words), and the section
# of this report that has the rest.
_WHY = (
    ("tracing", None, "The new layers: Tracing"),
    ("CPU per request", "plain", "Non-streamed requests"),
    ("throughput", "plain", "Non-streamed requests"),
    ("first text", "stream", "Streams"),
    ("same protocol", "stream", "Streams"),
    ("translated", "translated", "Streams"),
    ("heartbeat", None, "Many open streams"),
    ("memory", None, "Memory"),
)


def _missed(
    results: dict[str, Any], fig: dict[str, Any], rows: list[tuple[str, str, bool | None]]
) -> list[str]:
    """For each goal missed, where its time went: the profile of the same load, split into
    the stack's own code and what the server, HTTP client and event loop spend."""
    missed = [goal for goal, _, met in rows if met is False]
    if not missed:
        return []
    profiles = results.get("profile") or {}
    lines = ["", "### Goals missed, and where the time went", ""]
    grouped: dict[tuple[str | None, str], list[str]] = {}
    for goal in missed:
        where = next(
            ((label, section) for key, label, section in _WHY if key in goal),
            (None, "the tables below"),
        )
        grouped.setdefault(where, []).append(goal)
    for (label, section), goals_here in grouped.items():
        goal = "; ".join(goals_here)
        summary = profiles.get(label) if label else None
        if summary and summary.get("packages"):
            cost, unit = _profiled_cost(fig, label)
            shares = ", ".join(
                f"{name} {pct:.0f}%" + (f" ({cost * pct / 100:.1f} {unit})" if cost else "")
                for name, pct in summary["packages"]
                if pct >= 1
            )
            ours = [(name, pct) for name, pct in summary["self"] if "asgi_rotator/" in name]
            top = ", ".join(f"`{name.split(' (')[0]}` {pct:.1f}%" for name, pct in ours[:4])
            lines.append(
                f"- **{goal}**: the {label} profile's CPU samples by package: {shares}. "
                f"Our own code's largest: {top or DASH}. More in *Where the time goes: "
                f"{label}* and *{section}*."
            )
        elif section == "Many open streams" and results.get("open_streams"):
            lines.append(f"- **{goal}**: {_lateness(results['open_streams'])}")
        elif section == "Memory" and (held := _held_memory(results)):
            lines.append(f"- **{goal}**: {held} More in *{section}*.")
        else:
            lines.append(f"- **{goal}**: see *{section}*.")
    return lines


def _lateness(many: dict[str, Any]) -> str:
    """What the gateway was doing while the heartbeats came late: how many it sent a second
    beside how many plain requests, and how much later those plain requests were answered."""
    watch = many["watch"]
    idle, busy = many["plain_idle"], many["plain_busy"]
    per_second = watch["heartbeats"] / watch["seconds"] if watch["seconds"] else math.nan
    return (
        f"one gateway process sent {per_second:,.0f} heartbeats a second to "
        f"{many['opened']:,} streams while answering {busy['rps']:,.0f} plain requests a "
        f"second (idle: {idle['rps']:,.0f}); the plain requests' p99 went from "
        f"{idle['p99_ms']:.1f} to {busy['p99_ms']:.1f} ms. Each due heartbeat is a timer "
        "callback, a task and a write on the one event loop, so beside a full load of plain "
        "requests the loop falls behind; the lateness is seen from one Python client "
        "reading every stream, on the core the load generator and upstream share."
    )


def _held_memory(results: dict[str, Any]) -> str:
    """What ``benchmarks.stream_memory`` found an open stream holds, in one sentence."""
    held = (results.get("layers") or {}).get("stream_memory")
    if not held:
        return ""
    packages = ", ".join(
        f"{name} {size / 1024:.1f}" for name, size in held["packages_bytes"].items() if size >= 512
    )
    ours = ", ".join(
        f"`{name}` {size / 1024:.1f}" for name, size in list(held["ours_bytes"].items())[:6]
    )
    return (
        f"Python's allocations for one open stream (tracemalloc, {held['streams']:,} streams "
        f"in-process, no server): {held['kib_per_stream']:.1f} KiB. By package, KiB: "
        f"{packages}. Our largest, KiB: {ours}."
    )


def _profiled_cost(fig: dict[str, Any], label: str) -> tuple[float | None, str]:
    """The stack's measured CPU for the load a profile was taken under, to turn its shares
    into µs."""
    if label == "plain":
        value = fig["arms"].get(STACK, {}).get("16", {}).get("cpu_us")
        return value, "µs/req"
    kind = "same" if label == "stream" else "translated"
    value = fig["streams"].get(STACK, {}).get(kind, {}).get("cpu_us_per_event")
    return value, "µs/event"


def _new_layers(results: dict[str, Any], fig: dict[str, Any]) -> list[str]:
    """Tracing (served arm and in-process), the field cache and the cost lookup, each beside
    the stack without it."""
    layers = results.get("layers", {})
    traced = fig["arms"].get(TRACED)
    if not layers and traced is None:
        return []
    lines = ["", "## The new layers, each beside the stack without it"]
    if traced is not None:
        rows = []
        for arm in (STACK, TRACED):
            c16 = fig["arms"].get(arm, {}).get("16", {})
            tr16 = fig["translated"].get(arm, {}).get("16", {})
            kinds = fig["streams"].get(arm, {})
            rows.append(
                [
                    c16.get("cpu_us", math.nan),
                    tr16.get("cpu_us", math.nan),
                    kinds.get("same", {}).get("cpu_us_per_event", math.nan),
                    kinds.get("translated", {}).get("cpu_us_per_event", math.nan),
                    c16.get("rps", math.nan),
                ]
            )
        added = [b - a for a, b in zip(rows[0], rows[1], strict=True)]
        lines += [
            "",
            "### Tracing, served",
            "",
            f"`{TRACED}`: the stack with `[tracing] endpoint` set, as `serve` sets it up (SDK "
            "tracer provider, batch span processor, periodic metric reader) exporting over "
            "OTLP/HTTP to a receiver in another process, off the gateway's core, that decodes "
            "every export and discards it. The export thread is in the arm's process, so its "
            "CPU is counted. A stream's CPU per event includes its request's spans (divided "
            f"by {EVENTS} events); the per-event goal is judged on the in-process marginal "
            "figure below.",
            "",
            "| arm | CPU µs/req c=16 | translated CPU µs/req | CPU µs/event same "
            "| translated | req/s c=16 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, row in ((STACK, rows[0]), (TRACED, rows[1]), ("added", added)):
            cells = [_fmt(v, "{:.0f}") for v in row[:2]] + [_fmt(v, "{:.1f}") for v in row[2:4]]
            cells.append(_fmt(row[4], "{:+,.0f}" if name == "added" else "{:,.0f}"))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        received = results.get("otlp_received")
        if received:
            answered = received["requests_answered"]
            per = received["spans"] / answered if answered else math.nan
            lines += [
                "",
                f"The receiver decoded {received['spans']:,} spans and "
                f"{received['metric_points']:,} metric data points in {received['exports']:,} "
                f"exports ({received['bytes'] / 2**20:.1f} MiB; {received['rejected']} "
                f"rejected) for the {answered:,} requests the arm answered: "
                f"{_fmt(per, '{:.2f}')} spans per request (a request span and an attempt's "
                "client span make 2; fewer would mean the batch processor dropped spans); "
                f"queue-full warnings in its log: {received['drop_warnings']}.",
            ]
    tracing = layers.get("tracing")
    if tracing:
        arms = ("on", "on, 10% sampled")
        lines += [
            "",
            "### Tracing, in-process (`benchmarks/tracing.py`)",
            "",
            f"{tracing.get('rounds')} round(s) of {tracing.get('requests')} requests per arm, "
            "alternating; CPU µs of the process (export thread included; the receiver is "
            "another process). Per event: the marginal cost, streams of 10 and 80 events.",
            "",
            "| figure | off | on | added | ratio | 10% sampled | added | ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, label in (
            ("plain_us_per_request", "per plain request"),
            ("stream_us_per_event", "per streamed event (marginal)"),
        ):
            row = tracing.get(key)
            if not row:
                continue
            cells = [_fmt(row.get("off", math.nan), "{:.1f}")]
            for arm in arms:
                cells += [
                    _fmt(row.get(arm, math.nan), "{:.1f}"),
                    _fmt(row.get(f"{arm}: added", math.nan), "{:+.1f}"),
                    _fmt(row.get(f"{arm}: ratio", math.nan), "{:.2f}x"),
                ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cache = layers.get("field_cache")
    if cache:
        lines += [
            "",
            "### Field cache, in-process (`benchmarks/field_cache.py`)",
            "",
            "FieldCache around a terminal that answers at once, against the terminal bare, on "
            "a reasoning tool conversation (a tool call and its result sent back by an OpenAI "
            "Chat client, reasoning on; each answer streams reasoning, its signature and a "
            "tool call), best round of each. Reasoning put back on "
            f"{cache.get('anthropic_injected', math.nan):.0%} (Anthropic) and "
            f"{cache.get('gemini_injected', math.nan):.0%} (Gemini) of the requests.",
            "",
            "| figure | µs |",
            "|---|---:|",
        ]
        for key, label in (
            ("no_rule_us_per_request", "added per request, no rule applying (OpenAI upstream)"),
            (
                "rule_us_per_request",
                "added per request, Anthropic rule (lookup hit, inject, store)",
            ),
            ("rule_us_per_event", "added per reasoning event, Anthropic rule"),
            ("gemini_rule_us_per_event", "added per reasoning event, Gemini rule"),
            ("text_rule_us_per_event", "added per text event, Gemini rule (text kept)"),
        ):
            lines.append(f"| {label} | {_fmt(cache.get(key, math.nan), '{:.2f}')} |")
    cost = layers.get("cost")
    if cost:
        lines += [
            "",
            "### Cost lookup, in-process (`benchmarks/cost.py`)",
            "",
            "Two copies of the stack, priced and with a price table that knows nothing, in "
            "alternating rounds (each twice: the A/A spread is the machine's noise), and the "
            "pricing work alone in a loop.",
            "",
            "| figure | µs |",
            "|---|---:|",
            f"| plain request, priced | {_fmt(cost['priced_us_per_request'], '{:.1f}')} |",
            f"| plain request, unpriced | {_fmt(cost['unpriced_us_per_request'], '{:.1f}')} |",
            f"| difference (A/A spread) | {cost['stack_difference_us']:+.1f} "
            f"({cost['aa_spread_us']:.1f}) |",
            f"| the pricing work alone | {cost['pricing_work_us']:.2f} |",
            f"| `PriceTable.cost`, genai-prices model / configured | "
            f"{cost['library_lookup_us']:.2f} / {cost['configured_lookup_us']:.2f} |",
        ]
    return lines


def charts(results: dict[str, Any], fig: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths: list[str] = []
    arms = fig["arms"]
    names = list(arms)
    concurrency = [str(c) for c in results["meta"]["concurrency"]]

    figure, axis = plt.subplots(figsize=(10, 5))
    # One bar per concurrency, and the translated path at 16 connections where measured.
    translated = fig.get("translated", {})
    series = [(f"c={c}", arms, c) for c in concurrency]
    if translated:
        series.append(("translated, c=16", translated, "16"))
    width = 0.8 / len(series)
    for i, (label, table, c) in enumerate(series):
        values = [_nz(table.get(a, {}).get(c, {}).get("rps")) for a in names]
        axis.bar([x + i * width for x in range(len(names))], values, width, label=label)
    axis.set_xticks(
        [x + width * (len(series) - 1) / 2 for x in range(len(names))],
        names,
        rotation=30,
        ha="right",
    )
    axis.set_ylabel("requests/s")
    axis.set_title("Non-streamed throughput (gateway on one core)")
    axis.legend()
    paths.append(_save(figure, out / "throughput.png"))

    gateway = [a for a in names if a != "direct"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    left.barh(gateway, [arms[a].get("16", {}).get("cpu_us", 0) or 0 for a in gateway])
    left.set_xlabel("gateway CPU µs per request (c=16)")
    left.invert_yaxis()
    p50 = [arms[a].get("16", {}).get("p50_added_ms", 0) or 0 for a in gateway]
    p99 = [arms[a].get("16", {}).get("p99_added_ms", 0) or 0 for a in gateway]
    y = range(len(gateway))
    right.barh([v - 0.2 for v in y], p50, 0.4, label="p50")
    right.barh([v + 0.2 for v in y], p99, 0.4, label="p99")
    right.set_yticks(list(y), gateway)
    right.invert_yaxis()
    right.set_xlabel("latency added over direct, ms (c=16)")
    right.legend()
    figure.tight_layout()
    paths.append(_save(figure, out / "cpu_latency.png"))

    streams = fig["streams"]
    if streams:
        stream_arms = [a for a in streams if a != "direct"]
        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
        left.barh(
            stream_arms,
            [streams[a].get("same", {}).get("ttft_added_ms", 0) or 0 for a in stream_arms],
        )
        left.axvline(0.5, color="red", linestyle="--", label="goal")
        left.set_xlabel("added time to first text, ms")
        left.invert_yaxis()
        y = range(len(stream_arms))
        same = [_nz(streams[a].get("same", {}).get("cpu_us_per_event")) for a in stream_arms]
        translated = [
            _nz(streams[a].get("translated", {}).get("cpu_us_per_event")) for a in stream_arms
        ]
        right.barh([v - 0.2 for v in y], same, 0.4, label="same protocol")
        right.barh([v + 0.2 for v in y], translated, 0.4, label="translated")
        right.set_yticks(list(y), stream_arms)
        right.invert_yaxis()
        right.set_xlabel("gateway CPU µs per event")
        right.legend()
        figure.tight_layout()
        paths.append(_save(figure, out / "streams.png"))

    memory = results["memory"]
    soak = results.get("soak")
    if memory or soak:
        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
        held = results["meta"]["held"]
        mem_arms = list(memory)
        y = range(len(mem_arms))
        for i, n in enumerate(held):
            values = [
                memory[a]["held"].get(str(n), {}).get("per_stream", 0) / 1024 for a in mem_arms
            ]
            right_offset = (i - (len(held) - 1) / 2) * 0.4
            left.barh([v + right_offset for v in y], values, 0.4, label=f"{n} open")
        left.set_yticks(list(y), mem_arms)
        left.invert_yaxis()
        left.set_xlabel("RSS KiB per open stream")
        left.legend()
        if soak:
            xs = [s[0] for s in soak["samples"]]
            ys = [s[1] / 2**20 for s in soak["samples"]]
            right.plot(xs, ys, marker=".")
            right.set_xlabel("requests")
            right.set_ylabel("RSS MiB")
            right.set_title(f"soak: {soak['growth_pct']:+.2f}%")
        figure.tight_layout()
        paths.append(_save(figure, out / "memory.png"))
    plt.close("all")
    return paths


def _nz(value: float | None) -> float:
    return 0.0 if value is None or math.isnan(value) else value


def _save(figure: Any, path: Path) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return str(path)


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def summarize_profile(raw: str) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive shares per function from py-spy's ``--format raw`` (collapsed
    stacks: ``frame;frame;... count``), and the self share of each package (``packages``:
    asgi_rotator against the server, the HTTP client and the event loop)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return {"self": [], "ours": [], "packages": []}
    return {
        "self": [(name, n / total * 100) for name, n in own.most_common(25)],
        "ours": [
            (name, n / total * 100) for name, n in inclusive.most_common() if "asgi_rotator" in name
        ][:25],
        "packages": [(name, n / total * 100) for name, n in packages.most_common(8)],
    }


def _package(frame: str) -> str:
    """The top-level package of a shortened frame (``asyncio`` for the standard library's)."""
    match = _FRAME.match(frame)
    if match is None:
        return "other"
    path = match.group("file")
    if path.startswith("<"):
        return "python"
    return path.split("/", 1)[0].removesuffix(".py")


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "asgi_rotator/", "lib/python"):
        if marker in path:
            path = ("asgi_rotator/" if marker == "asgi_rotator/" else "") + path.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({path})"


def write(results: dict[str, Any], out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    fig = figures(results)
    results["figures"] = fig
    paths = charts(results, fig, out)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "results.md").write_text(markdown(results, fig, paths))
    return [str(out / "results.md"), str(out / "results.json"), *paths]
