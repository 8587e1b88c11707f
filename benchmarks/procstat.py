"""CPU time and resident memory of a process and its descendants, from /proc.

CPU comes from ``/proc/<pid>/task/<tid>/schedstat`` (nanoseconds on CPU, per thread) when
the kernel has it, else from ``utime + stime`` in ``/proc/<pid>/stat`` (clock ticks, usually
10 ms: fine over a run of thousands of requests).  Descendants count because LiteLLM's CLI
may run its server in a child process.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = 1.0 / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by ``pid`` and its descendants."""
    return sum(_cpu_of(p) for p in descendants(pid))


def _cpu_of(pid: int) -> float:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        total_ns = 0
        for task in tasks:
            total_ns += int((task / "schedstat").read_text().split()[0])
        if total_ns:
            return total_ns / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * _TICK


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants."""
    total = 0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total
