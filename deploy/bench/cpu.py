"""CPU time and memory of processes, read from /proc (Linux).

A process's CPU is `utime + stime` of its own threads; what it reaped of its children is
`cutime + cstime`. A process tree costs the sum of all four over the root and every live
descendant: a child that exits moves from "live" into its parent's `cutime + cstime`, so
the sum only grows, and its difference between two readings is the CPU the tree spent
between them, however many children (PostgreSQL backends, say) came and went meanwhile.
"""

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICK = 1 / os.sysconf("SC_CLK_TCK")
"""Seconds per clock tick, the unit of the CPU fields in /proc/<pid>/stat."""


@dataclass(frozen=True)
class ProcessStat:
    pid: int
    parent: int
    command: str
    own: float
    """Seconds: utime + stime, every thread of the process."""
    reaped: float
    """Seconds: cutime + cstime, the children it has waited for."""


def process_stat(pid: int) -> ProcessStat | None:
    """The process's CPU counters; None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command, in parentheses, may itself hold spaces and parentheses: split after the last.
    head, _, tail = text.rpartition(")")
    fields = tail.split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return ProcessStat(
        pid=pid,
        parent=int(fields[1]),
        command=head.partition("(")[2],
        own=(utime + stime) * TICK,
        reaped=(cutime + cstime) * TICK,
    )


def all_processes() -> dict[int, ProcessStat]:
    found = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := process_stat(int(entry.name))) is not None:
            found[stat.pid] = stat
    return found


def tree_seconds(root: int, processes: Mapping[int, ProcessStat]) -> float | None:
    """CPU seconds of `root` and its live descendants (see the module's docstring); None when
    `root` is not running."""
    if root not in processes:
        return None
    children: dict[int, list[int]] = {}
    for stat in processes.values():
        children.setdefault(stat.parent, []).append(stat.pid)
    total, pending = 0.0, [root]
    while pending:
        stat = processes[pending.pop()]
        total += stat.own + stat.reaped
        pending.extend(children.get(stat.pid, ()))
    return total


def cpu_seconds(roots: Mapping[str, Iterable[int]]) -> dict[str, float | None]:
    """CPU seconds of each named group of process trees, all read in one pass over /proc;
    None for a group none of whose roots is running."""
    processes = all_processes()
    seconds: dict[str, float | None] = {}
    for name, pids in roots.items():
        trees = [tree_seconds(pid, processes) for pid in pids]
        running = [value for value in trees if value is not None]
        seconds[name] = sum(running) if running else None
    return seconds


def own_seconds(pid: int) -> float | None:
    """CPU seconds of the process itself, without the children it reaped (the benchmark's own
    process starts the services, and must not count them as its own)."""
    stat = process_stat(pid)
    return stat.own if stat else None


def pids_named(command: str, argument: str | None = None) -> list[int]:
    """Every process whose command (`/proc/<pid>/comm`) is `command`, e.g. `beam.smp`, and
    whose command line holds `argument` as one of its words, when given."""
    found = []
    for pid, stat in all_processes().items():
        if stat.command != command:
            continue
        try:
            words = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if argument is None or argument.encode() in words:
            found.append(pid)
    return sorted(found)


def host_busy_seconds() -> float:
    """CPU seconds every core of the host spent on anything but idling and waiting for I/O,
    since boot (the first line of /proc/stat). Includes whatever else runs on the host."""
    fields = [int(value) for value in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest is inside user,
    # and steal is time the hypervisor gave to someone else.
    busy = sum(fields[:7]) - fields[3] - fields[4]
    return busy * TICK


def resident_mb(pid: int) -> float | None:
    """Resident memory of the process (VmRSS), in MB; None when it is gone."""
    try:
        lines = (PROC / str(pid) / "status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None
