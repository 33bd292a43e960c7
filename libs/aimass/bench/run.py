"""The bench's sections in order on one local stack, each reporting progress as it goes."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aimass import contracts
from aimass.bench import detector, latency, rules, scaling, sink
from aimass.bench.fleet import Fleet
from aimass.site import Site

SECTIONS = ("detector", "rules", "sink", "latency", "scaling")
STORING = {"sink", "latency"}  # the sections that read ClickHouse: without them the run starts none


@dataclass
class BenchOptions:
    only: tuple[str, ...] = SECTIONS
    providers: str = ""
    threads: int = 0
    sessions: int = 0
    max_batch: int = 4
    detector_workers: int = 1  # detector processes in the detector and scaling sections (one group)
    quick: bool = False  # smaller workloads: a smoke run, not figures to report


def machine() -> dict:
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "onnxruntime": ort.__version__,
            "providers_available": ort.get_available_providers(), "gpu": shutil.which("nvidia-smi") is not None}


def run_bench(site: Site, opts: BenchOptions, say: Callable[[str], None] = print) -> dict:
    unknown = set(opts.only) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown bench sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    det = detector.DetectorOptions(frames_per_camera=15 if opts.quick else 60, ceiling_frames=400 if opts.quick else 2000,
                                   drain_s=1.0 if opts.quick else 5.0,
                                   providers=opts.providers, threads=opts.threads, sessions=opts.sessions,
                                   max_batch=opts.max_batch, workers=opts.detector_workers)
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
                     "options": {k: v for k, v in opts.__dict__.items()}}
    t0 = time.monotonic()
    with (tempfile.TemporaryDirectory(prefix="aimass-bench-") as tmp,
          Fleet(Path(tmp), site, clickhouse=bool(STORING & set(opts.only))) as fleet):
        def section(name: str, fn):
            if name not in opts.only:
                return
            say(f"bench: {name} ...")
            t = time.monotonic()
            results[name] = fn()
            say(f"bench: {name} done in {time.monotonic() - t:.0f} s")

        section("detector", lambda: detector.run(fleet, det))
        # Quick runs still give the two-worker drain ~0.5 s on a fast host: 8000 messages took ~0.1 s,
        # less than one worker's first batch can lag the other's, and once in about a dozen runs one
        # worker had counted 7500 of them before the other counted any (no span with both to measure).
        section("rules", lambda: rules.run(fleet, rules.RulesOptions(per_camera=10000 if opts.quick else 25000,
                                                                     rounds=1 if opts.quick else 3)))
        # Quick: 10 batches, so each of the two sink processes counts a few (a span with both at work).
        section("sink", lambda: sink.run(fleet, sink.SinkOptions(per_camera=5000 if opts.quick else 15000,
                                                                 pairs=1 if opts.quick else 3)))
        capacity = results.get("detector", {}).get("pipeline_fps") or 20.0
        section("latency", lambda: latency.run(fleet, latency.LatencyOptions(seconds=8 if opts.quick else 30,
                                                                             detector=det), capacity))
        section("scaling", lambda: scaling.run(fleet, scaling.ScalingOptions(
            steps=(1, 2) if opts.quick else (1, 2, 4, 8, 16), seconds=5 if opts.quick else 12,
            capacity_fps=0.0 if opts.quick else results.get("detector", {}).get("pipeline_fps", 0.0),
            detector=detector.DetectorOptions(frames_per_camera=10 if opts.quick else 40, providers=opts.providers,
                                              threads=opts.threads, sessions=opts.sessions, max_batch=opts.max_batch,
                                              workers=opts.detector_workers))))
    results["seconds"] = round(time.monotonic() - t0)
    results["finished_ms"] = contracts.now_ms()
    return results
