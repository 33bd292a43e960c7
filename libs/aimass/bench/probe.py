"""What the bench reads from the running workers: counter rates from their Prometheus endpoints,
process memory, GPU utilisation, and percentiles."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from aimass.contracts import now_ms
from aimass.kafka import reader
from aimass.processes import cpu_seconds
from aimass.settings import DetectorSettings, Settings


def counter(port: int, name: str) -> float:
    """The sum over all label sets of counter ``name`` (without ``_total``) at ``localhost:port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == name:
            total += sum(s.value for s in family.samples if s.name == f"{name}_total")
    return total


@dataclass
class Rate:
    """A counter's rate in its steady state: between the times it crossed ``lo`` and ``hi`` of its
    target (start-up and the last stragglers left out)."""

    per_s: float
    window_s: float
    samples: list[tuple[float, float]] = field(repr=False, default_factory=list)


def steady_rate(read: Callable[[], float], target: float, deadline_s: float, lo: float = 0.1, hi: float = 0.9,
                interval_s: float = 0.25, alive: Callable[[], bool] = lambda: True) -> Rate:
    """Poll ``read`` until it reaches ``target`` (or ``hi`` of it, then a little longer); the rate between
    the interpolated crossing times of ``lo*target`` and ``hi*target``. Raises if the deadline passes or
    ``alive`` turns false first."""
    samples: list[tuple[float, float]] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not alive():
            raise RuntimeError("the measured worker exited; see its log under the bench results folder")
        try:
            samples.append((time.monotonic(), read()))
        except OSError:
            pass  # the endpoint is not up yet
        if samples and samples[-1][1] >= target:
            break
        time.sleep(interval_s)
    else:
        got = samples[-1][1] if samples else 0
        raise RuntimeError(f"only {got:.0f} of {target:.0f} processed after {deadline_s:.0f} s")
    return rate_between(samples, target, lo, hi)


def combined_rate(reads: Sequence[Callable[[], float]], target: float, deadline_s: float, lo: float = 0.1,
                  hi: float = 0.9, interval_s: float = 0.25,
                  alive: Callable[[], bool] = lambda: True) -> tuple[Rate, list[float]]:
    """``steady_rate`` of several workers' counters together (their sum reaching ``target``), over the
    samples where every one of them is at work: the window opens no earlier than the first sample where
    all have counted (while a group's workers are still joining, one may read alone) and closes no later
    than the last where none has yet read all it will (one whose partitions ran dry idles while the
    others finish: the end of the backlog, not the group's pace), or at ``hi`` where no sample falls
    between the two. Returns the rate and each counter's last value."""
    each: list[tuple[float, list[float]]] = []

    def read() -> float:
        values = [r() for r in reads]
        each.append((time.monotonic(), values))
        return sum(values)

    rate = steady_rate(read, target, deadline_s, lo, hi, interval_s, alive)
    all_in = next((sum(v) for _, v in each if all(x > 0 for x in v)), target)
    start = max(lo, all_in / target)
    if start >= hi:
        raise RuntimeError(f"one worker began counting only after {all_in:.0f} of {target:.0f}: no span with all "
                           "of them working to measure; give the workload more messages")
    last = each[-1][1]
    busy = [sum(v) for _, v in each if all(x < end for x, end in zip(v, last))]  # counters only grow: a prefix
    stop = min(hi, busy[-1] / target) if busy else hi
    if stop <= start:  # counters moving in steps as large as the drain (a quick run's few batches): up to hi
        stop = hi
    return rate_between(rate.samples, target, start, stop), last


def median_round(rounds: Sequence[dict], key: str) -> tuple[dict, list[float]]:
    """The round whose ``key`` is the median (the lower middle one of an even count), and the range."""
    values = [r[key] for r in rounds]
    return rounds[values.index(statistics.median_low(values))], [min(values), max(values)]


def rate_between(samples: Sequence[tuple[float, float]], target: float, lo: float = 0.1, hi: float = 0.9) -> Rate:
    """The rate of (time, count) ``samples`` between the interpolated times they crossed ``lo*target``
    and ``hi*target``."""
    t_lo, t_hi = crossing(samples, lo * target), crossing(samples, hi * target)
    window = max(t_hi - t_lo, 1e-6)
    return Rate((hi - lo) * target / window, window, list(samples))


def crossing(samples: Sequence[tuple[float, float]], level: float) -> float:
    for (t0, v0), (t1, v1) in zip(samples, samples[1:]):
        if v0 < level <= v1:
            return t0 + (t1 - t0) * (level - v0) / (v1 - v0)
    return samples[0][0] if samples[0][1] >= level else samples[-1][0]


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    if len(values) == 0:
        return {f"p{q:g}": float("nan") for q in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q:g}": round(float(np.percentile(arr, q)), 1) for q in qs}


@dataclass
class CpuSamples:
    """The CPU seconds of ``pids`` read beside a counter each time it is read (``reading`` wraps the
    counter's read), so that the CPU a unit is taken over the window the counter's steady rate is:
    a worker's last start-up work after it says it is ready, and the stragglers, left out."""

    pids: list[int]
    samples: list[tuple[float, float]] = field(default_factory=list)  # (count, CPU seconds)

    def reading(self, read: Callable[[], float]) -> Callable[[], float]:
        def both() -> float:
            count = read()
            self.samples.append((count, cpu_seconds(*self.pids)))
            return count
        return both

    def per_unit(self, target: float, lo: float = 0.1, hi: float = 0.9) -> float:
        """CPU seconds a unit between the first reading at or past ``lo`` of ``target`` and the first at
        or past ``hi`` of it (the first and last readings where those are the same)."""
        first = next((s for s in self.samples if s[0] >= lo * target), self.samples[0])
        last = next((s for s in self.samples if s[0] >= hi * target), self.samples[-1])
        if last[0] <= first[0]:
            first, last = self.samples[0], self.samples[-1]
        return (last[1] - first[1]) / max(last[0] - first[0], 1.0)


class CpuUse:
    """Processes' CPU use over a ``with`` block: ``seconds`` of CPU, and ``cores`` (CPU seconds per
    second), after it."""

    def __init__(self, *pids: int):
        self.pids = pids
        self.cores = 0.0
        self.seconds = 0.0

    def __enter__(self) -> "CpuUse":
        self._cpu, self._wall = cpu_seconds(*self.pids), time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = cpu_seconds(*self.pids) - self._cpu
        self.cores = self.seconds / max(time.monotonic() - self._wall, 1e-6)


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class GpuSampler:
    """Samples GPU ``device``'s utilisation and memory with nvidia-smi every ``interval_s`` while running
    (a no-op where there is no NVIDIA GPU). ``device`` is the index the workers' sessions run on
    (``detector_device_id``): on a host with several GPUs, the others say nothing about them."""

    def __init__(self, interval_s: float = 0.5, device: int | None = None):
        self.available = shutil.which("nvidia-smi") is not None
        self.interval_s = interval_s
        self.device = DetectorSettings().detector_device_id if device is None else device
        self.util: list[float] = []
        self.mem_mb: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "GpuSampler":
        if self.available:
            self._thread = threading.Thread(target=self._loop, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                out = subprocess.run(["nvidia-smi", f"--id={self.device}", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
                util, mem = out.stdout.splitlines()[0].split(",")[:2]
                self.util.append(float(util))
                self.mem_mb.append(float(mem))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                continue

    def summary(self) -> dict | None:
        if not self.util:
            return None
        return {"gpu_util_mean_pct": round(float(np.mean(self.util)), 1), "gpu_util_max_pct": max(self.util),
                "gpu_mem_max_mb": max(self.mem_mb)}


class TopicWatch:
    """A consumer on its own thread, from the topic's end: each message that arrives after the watch
    started goes to ``on_message(arrival epoch ms, value)``."""

    def __init__(self, settings: Settings, topic: str, on_message: Callable[[float, bytes], None]):
        self.settings, self.topic, self.on_message = settings, settings.topic(topic), on_message
        self._stop, self._ready = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name=f"watch-{topic}", daemon=True)

    def __enter__(self) -> "TopicWatch":
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"could not start a consumer on {self.topic}")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _run(self) -> None:
        consumer = reader(self.settings, self.topic, auto_offset_reset="latest")
        await consumer.start()
        self._ready.set()
        try:
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                t = now_ms()
                for records in batches.values():
                    for r in records:
                        self.on_message(t, r.value)
        finally:
            await consumer.stop()
