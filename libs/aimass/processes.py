"""Processes: free ports, liveness, CPU time, stopping a whole process group, and the cores this one may use."""

from __future__ import annotations

import math
import os
import signal
import socket
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours still answers kill(0): reap it
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:  # not ours (an orphan's new parent reaps it): a zombie has exited all the same
        return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped (Linux /proc; False where it cannot be read)."""
    try:
        return _stat(pid)[0] == "Z"
    except (OSError, IndexError):
        return False


def cpu_seconds(*pids: int) -> float:
    """CPU time the processes (all their threads) have used so far, user and system (Linux /proc)."""
    ticks = 0
    for pid in pids:
        fields = _stat(pid)
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The processes below ``pid``: its children, theirs, and so on (Linux /proc); e.g. a server started
    through ``runuser``, which runs it as its child."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent_of[int(entry)] = int(_stat(int(entry))[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [c for c, p in parent_of.items() if p == parent]
        out += children
        frontier += children
    return out


def _stat(pid: int) -> list[str]:
    """``/proc/PID/stat``'s fields after the command name (which may hold spaces and parentheses):
    state first, then ppid, ... (proc(5), from its third field)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def stop_pid(pid: int, timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; returns when the process is gone. Servers are
    started in their own session, so the whole group is signalled (a runuser wrapper and its child).
    Pid 0 means none was recorded (a stack started without ClickHouse): nothing to stop, where
    ``killpg(0)`` would signal the caller's own group."""
    if pid == 0:
        return
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not pid_alive(pid):
                return
            time.sleep(0.05)
    if pid_alive(pid):
        raise RuntimeError(f"process {pid} did not stop after SIGKILL")


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity, lowered to its cgroup's CPU quota (a container's
    CPU limit does not show in the affinity: limited to 4 CPUs on a 32-core node, it still sees 32)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cpu_quota(cgroup)
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def _cpu_quota(cgroup: Path) -> float | None:
    """CPUs allowed by the cgroup's quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None: no limit."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]  # "max 100000" when unlimited
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota, period = (int((cgroup / "cpu" / name).read_text()) for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
        return quota / period if quota > 0 and period > 0 else None  # -1: unlimited
    except (OSError, ValueError):
        return None
