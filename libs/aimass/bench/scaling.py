"""Scaling: 1, 2, 4, 8, 16 cameras at a fixed real-time pace into one detector worker, then doubling on
until they offer the worker's measured capacity: detected frames/s, capture -> detections latency, the
worker's memory and CPU per camera (and the GPU's use, where there is one) at each step, and the most
cameras it kept up with (its CPU with no camera is read first: what a worker costs before any camera);
then one against two detector workers draining the same backlog (the second splits the frames topic's
partitions)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aimass import contracts
from aimass.bench import probe, workload
from aimass.bench.detector import DetectorOptions, cycled, drain
from aimass.bench.fleet import Fleet
from aimass.contracts import Detections
from aimass.settings import DetectorSettings


@dataclass
class ScalingOptions:
    steps: tuple[int, ...] = (1, 2, 4, 8, 16)
    fps_per_camera: float = 2.0  # the least; more where the capacity is high (see plan)
    seconds: float = 12.0
    # The detector section's frames/s through the pipeline: the steps go on doubling until they offer it,
    # so the table shows where one worker stops keeping up (0: the given steps only).
    capacity_fps: float = 0.0
    max_cameras: int = 256
    detector: DetectorOptions = field(default_factory=DetectorOptions)


# A step kept up when this share of the frames offered was detected within it. Not 1: the frames
# sent in its last few hundred ms (the latency) arrive after it; a worker past its capacity falls
# well short (2 cores: 39 of 64 frames/s).
KEPT_UP = 0.9
IDLE_S = 3.0  # the detector's CPU is read this long with no cameras: what it costs before any camera


def plan(opts: ScalingOptions) -> tuple[float, list[int]]:
    """(frames/s per camera, camera counts). The given steps offer at most half the capacity (on a GPU,
    two frames/s from 16 cameras would leave it idle and say nothing), then doubling goes on up to the
    first step that offers the whole capacity."""
    steps = sorted(opts.steps)
    fps = opts.fps_per_camera
    if opts.capacity_fps > 0:
        fps = max(fps, round(opts.capacity_fps / (2 * steps[-1]), 1))
        while steps[-1] * fps < opts.capacity_fps and steps[-1] * 2 <= opts.max_cameras:
            steps.append(steps[-1] * 2)
    return fps, steps


def kept_up_with(steps: list[dict]) -> int:
    """The most cameras of a step (and of every step before it) that kept up (``KEPT_UP``)."""
    most = 0
    for st in steps:
        if st["detected_fps"] < KEPT_UP * st["offered_fps"]:
            break
        most = st["cameras"]
    return most


def cameras_step(fleet: Fleet, opts: ScalingOptions, fps: float, steps: list[int]) -> tuple[list[dict], float]:
    """Each step's figures, and the worker's CPU (cores) with no camera."""
    cams = workload.cameras(fleet.site, max(steps))
    frames = workload.render(cams, 20)
    ns = fleet.namespace("scaling", site=fleet.site.model_copy(update={"cameras": cams}))
    d = opts.detector
    workers = ns.start_together("detector", d.workers, d.worker_env())
    pids = [w.proc.pid for w in workers]

    def rss() -> float:
        return sum(probe.rss_mb(pid) for pid in pids)
    idle_rss = rss()
    with probe.CpuUse(*pids) as idle:
        time.sleep(IDLE_S)  # no camera yet: a measuring window, not a wait for readiness
    out = []
    arrivals: list[tuple[float, float]] = []  # (arrival ms, capture -> arrival ms) of each detections message
    with probe.TopicWatch(ns.settings(), contracts.TOPIC_DETECTIONS,
                          lambda t, v: arrivals.append((t, t - contracts.decode(v, Detections).captured_ms))):
        for n in steps:
            subset = {c.id: frames[c.id] for c in cams[:n]}
            first = len(arrivals)
            t0 = contracts.now_ms()
            # The workers' CPU over the step and its drain: what these cameras cost them, in cores.
            with probe.CpuUse(*pids) as cpu, probe.GpuSampler() as gpu:
                paced = asyncio.run(workload.paced_cameras(ns.settings(), subset, fps, opts.seconds, fleet.site.site.id))
                sent = paced.sent
                end = time.monotonic() + 60
                while len(arrivals) - first < sent and time.monotonic() < end and all(w.alive() for w in workers):
                    time.sleep(0.1)  # the backlog of this step drains before the next starts (bounded)
            got = arrivals[first:]
            # Offered is what went out: a sender that fell behind the cameras' clocks offered less.
            window_s = opts.seconds + paced.behind_s
            in_window = [a for a, _ in got if a <= t0 + window_s * 1000]
            step_rss = rss()
            out.append({"cameras": n, "offered_fps": round(sent / window_s, 1),
                        "sender_behind_ms": round(paced.behind_s * 1000, 1),
                        "detected_fps": round(len(in_window) / window_s, 1), "frames_sent": sent,
                        "frames_detected": len(got), "latency_ms": probe.percentiles([lat for _, lat in got]),
                        "rss_mb": round(step_rss, 1), "rss_per_camera_mb": round((step_rss - idle_rss) / n, 2),
                        "cpu_cores": round(cpu.cores, 3), "cpu_per_camera": round(max(0.0, cpu.cores - idle.cores) / n, 4),
                        **({"gpu": g} if (g := gpu.summary()) else {})})
    ns.stop()
    return out, idle.cores


def workers_step(fleet: Fleet, opts: ScalingOptions) -> dict:
    """One detector with the worker's own session layout against two with half its sessions each,
    draining the same backlog."""
    from aimass_detector.serving import session_layout

    d = opts.detector
    # One camera per partition of the frames topic, so each worker gets half of them whichever way the
    # group splits the partitions (the site's own ids put two cameras on one partition).
    cams = workload.cameras(fleet.site, d.cameras, spread=DetectorSettings().partitions_frames)
    # Long enough at the detector section's rate to read a rate from (a GPU drains the cameras' frames
    # in under a second).
    per_camera = d.per_camera(opts.capacity_fps, len(cams))
    ordered = workload.interleave(cycled(workload.render(cams, d.frames_per_camera), per_camera))
    sessions, threads = session_layout(DetectorSettings(providers=d.providers, threads=d.threads,
                                                        detector_sessions=d.sessions))
    threads = threads or 0
    one = drain(fleet, "one_detector", cams, ordered,
                      DetectorOptions(**{**d.__dict__, "sessions": sessions, "threads": threads}), join_first=True)
    half = max(1, sessions // 2)
    two = drain(fleet, "two_detectors", cams, ordered,
                      DetectorOptions(**{**d.__dict__, "sessions": half, "threads": threads}), workers=2, join_first=True)
    return {"one_worker_fps": round(one.rate.per_s, 1), "two_workers_fps": round(two.rate.per_s, 1),
            "two_over_one": round(two.rate.per_s / one.rate.per_s, 3),
            "sessions_each": [sessions, half], "threads_per_session": threads}


def run(fleet: Fleet, opts: ScalingOptions) -> dict:
    fps, steps = plan(opts)
    measured, idle_cpu = cameras_step(fleet, opts, fps, steps)
    return {"fps_per_camera": fps, "seconds_per_step": opts.seconds, "capacity_fps": opts.capacity_fps,
            "detector_workers": opts.detector.workers,
            "idle_cpu_cores": round(idle_cpu, 3), "steps": measured, "kept_up_with_cameras": kept_up_with(measured),
            "kept_up_share": KEPT_UP, "workers": workers_step(fleet, opts)}
