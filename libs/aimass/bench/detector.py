"""Detector efficiency: frames/s through Kafka -> detector worker -> detections topic, divided by bare
ONNX Runtime frames/s on the same frames (decoded and prepared beforehand), same model and batch size:
the faster of one session with ONNX Runtime's threads and the worker's own session layout. The frames
wait in Kafka before the worker starts, so the worker drains a backlog at its own pace and nothing else
competes for the cores; bare runs before and after it and is averaged.

Then the worker's ceiling: the same drain through a model that costs nearly nothing (free_model), so
what is left is the worker's own work around the model: the most frames/s it can feed any model
(against bare, whether the worker or the model bounds it: on a fast GPU, the worker), and its CPU a
frame around the model against its CPU a frame with the real one."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path

from aimass import contracts
from aimass.bench import free_model, probe, workload
from aimass.bench.fleet import Fleet
from aimass.settings import DetectorSettings


@dataclass
class DetectorOptions:
    frames_per_camera: int = 60
    cameras: int = 4
    providers: str = ""  # as the detector's setting: empty = best available
    threads: int = 0  # per session; 0 = the worker's auto layout (serving.session_layout)
    sessions: int = 0
    max_batch: int = 4
    ceiling_frames: int = 2000  # drained through the free model: ~4 s at this host's ~500 frames/s
    # The real model's drain lasts at least this long at the bare rate: the cameras' 240 frames drain in
    # under a second on a GPU, too short for a rate (they read 237-523 frames/s on an H100, bare ~500).
    drain_s: float = 5.0
    # Detector worker processes in one group (the pipeline's, the ceiling's and the scaling steps'): on a
    # GPU one worker's CPU work bounds it well below the GPU (docs/gpu.md), so more share the GPU.
    workers: int = 1

    def per_camera(self, rate_fps: float, cameras: int) -> int:
        """Frames a camera for a drain of ``cameras`` that lasts ``drain_s`` at ``rate_fps`` (at least
        ``frames_per_camera``)."""
        return max(self.frames_per_camera, math.ceil(rate_fps * self.drain_s / cameras))

    def worker_env(self) -> dict[str, str]:
        """The detector worker's settings for these options."""
        return {"AIMASS_MAX_BATCH": str(self.max_batch), "AIMASS_THREADS": str(self.threads),
                "AIMASS_DETECTOR_SESSIONS": str(self.sessions), "AIMASS_PROVIDERS": self.providers}


def bare(frames: list[workload.EncodedFrame], opts: DetectorOptions, model_dir, rounds: int = 1) -> dict:
    """Frames/s of bare ONNX Runtime on prepared batches of ``max_batch``: one session with ONNX
    Runtime's own threads and defaults, and the worker's session layout (its sessions at once, each
    on a thread of its own, with its threads and options); and of the detector's own decode ->
    prepare -> run -> decode path, on ``frames``."""
    from concurrent.futures import ThreadPoolExecutor

    from aimass_detector.engine import Detector
    from aimass_detector.serving import detector_loader, detector_options, session_layout

    settings = DetectorSettings(providers=opts.providers, threads=opts.threads, detector_sessions=opts.sessions)
    sessions, threads = session_layout(settings)
    # The worker's own options (IO binding, GPU device...) for this run's providers, with ONNX Runtime's
    # threads and spinning: bare as fast as one session goes alone, not as the worker runs it.
    det = Detector.from_folder(model_dir, **{**detector_options(settings), "threads": opts.threads or None,
                                             "spinning": None})
    det.warmup(opts.max_batch)
    layout = detector_loader(settings)(model_dir)
    layout.warmup(opts.max_batch)
    images = [det.decode_jpeg(f.jpeg) for f in frames]
    batches = [images[i:i + opts.max_batch] for i in range(0, len(images), opts.max_batch)]
    # Each batch in its own input buffer (none is given back: no run releases them).
    feeds = [det.adapter.prepare(b) for b in batches]
    names = det.adapter.output_names

    def timed(run) -> float:
        best = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t)
        return len(frames) / best

    session_fps = timed(lambda: [det.infer(names, f) for f in feeds])
    with ThreadPoolExecutor(sessions) as threads_:
        layout_fps = timed(lambda: list(threads_.map(lambda f: layout.infer(names, f), feeds)))
    t = time.perf_counter()
    for b in [frames[i:i + opts.max_batch] for i in range(0, len(frames), opts.max_batch)]:
        det.detect([det.decode_jpeg(f.jpeg) for f in b])
    path_s = time.perf_counter() - t
    return {"session_fps": session_fps, "layout_fps": layout_fps, "path_fps": len(frames) / path_s,
            "providers": det.providers, "sessions": sessions, "threads": threads}


@dataclass
class Drained:
    rate: probe.Rate  # the workers' frames/s together
    rss_mb: float  # the workers' resident memory together at the end
    gpu: dict | None  # GPU use while they drained, where there is a GPU
    cpu_s_per_frame: float  # the workers' CPU a frame together, over the 10-90 % window the rate is read in
    frames: int  # how many frames they drained

    @property
    def cpu_ms_per_frame(self) -> float:
        return self.cpu_s_per_frame * 1000


def drain(fleet: Fleet, name: str, cams, ordered, opts: DetectorOptions, workers: int = 1,
          join_first: bool = False, model_dir: Path | None = None, interval_s: float = 0.25) -> Drained:
    """``workers`` detector processes drain the frames from a fresh namespace's frames topic. The frames
    are produced before the workers start, so producing costs the measurement nothing; with
    ``join_first``, and always with several workers, the workers join first and the frames follow, so
    no rebalance (a second worker joining) falls inside the measurement and no worker that got its
    partitions first reads alone. ``model_dir``: the model they serve, if not the configured
    one; ``interval_s``: how often the frame counters are read (a short drain needs them often)."""
    join_first = join_first or workers > 1
    site = fleet.site
    ns = fleet.namespace(name, site=site.model_copy(update={"cameras": cams}))
    env = {**opts.worker_env(), "AIMASS_MAX_FRAME_AGE_S": "3600",
           **({"AIMASS_MODEL_DIR": str(model_dir)} if model_dir else {})}
    now = contracts.now_ms()
    messages = [(f.camera_id.encode(), workload.frame_message(f, seq, now - 1000 + seq, site.site.id))
                for seq, f in ordered]

    def produce() -> None:
        asyncio.run(workload.produce(ns.settings(), contracts.TOPIC_FRAMES, messages))
    if not join_first:
        produce()
    started = ns.start_together("detector", workers, env)
    # The CPU is read beside the frame counter, so it is taken over the rate's window (as the rules' and
    # the sink's): the workers' last start-up work after they say they are ready is left out.
    cpu = probe.CpuSamples([w.proc.pid for w in started])
    with probe.GpuSampler() as gpu:
        if join_first:
            produce()
        frames = cpu.reading(lambda: sum(probe.counter(w.metrics_port, "aimass_frames") for w in started))
        rate = probe.steady_rate(frames, len(messages), 300, interval_s=interval_s,
                                 alive=lambda: all(w.alive() for w in started))
        rss = sum(probe.rss_mb(w.proc.pid) for w in started)
    ns.stop()
    return Drained(rate, rss, gpu.summary(), cpu.per_unit(len(messages)), len(messages))


def cycled(frames: dict[str, list[workload.EncodedFrame]], per_camera: int) -> dict[str, list[workload.EncodedFrame]]:
    """Each camera's frames over again until it has ``per_camera`` of them."""
    return {cam: (fs * math.ceil(per_camera / len(fs)))[:per_camera] for cam, fs in frames.items()}


def ceiling(fleet: Fleet, cams, frames: dict[str, list[workload.EncodedFrame]], opts: DetectorOptions,
            model_dir: Path) -> dict:
    """The worker draining ``opts.ceiling_frames`` (the cameras' frames over again) through the free
    stand-in of ``model_dir``'s model, built on the frame of a sample where the real model finds most
    objects, so the worker tracks and sends as many as it does for the real frames at their busiest."""
    sample = [f.jpeg for fs in frames.values() for f in fs[::10]]
    free = free_model.build(model_dir, fleet.folder / "free-model", sample)
    per_camera = max(1, opts.ceiling_frames // len(cams))
    # ~4 s here, a few seconds on a host that feeds a GPU
    d = drain(fleet, "detector_ceiling", cams, workload.interleave(cycled(frames, per_camera)), opts,
              workers=opts.workers, model_dir=free.folder, interval_s=0.05)
    return {"ceiling_frames": d.frames, "ceiling_objects_per_frame": free.objects, "ceiling_fps": round(d.rate.per_s, 1),
            "ceiling_cpu_ms_per_frame": round(d.cpu_ms_per_frame, 3), **({"ceiling_gpu": d.gpu} if d.gpu else {})}


def run(fleet: Fleet, opts: DetectorOptions) -> dict:
    cams = workload.cameras(fleet.site, opts.cameras)
    by_camera = workload.render(cams, opts.frames_per_camera)
    ordered = workload.interleave(by_camera)
    frames = [f for _, f in ordered]
    model_dir = DetectorSettings().model_dir
    before = bare(frames, opts, model_dir)
    per_camera = opts.per_camera(max(before["session_fps"], before["layout_fps"]), len(cams))
    d = drain(fleet, "detector", cams, workload.interleave(cycled(by_camera, per_camera)), opts,
              workers=opts.workers, interval_s=0.1)
    after = bare(frames, opts, model_dir)
    mean = {k: (before[k] + after[k]) / 2 for k in ("session_fps", "layout_fps", "path_fps")}
    # The baseline is the faster bare layout: the worker's own, or one session with all the threads.
    baseline = max(mean["session_fps"], mean["layout_fps"])
    top = ceiling(fleet, cams, by_camera, opts, model_dir)
    cpu_ms = round(d.cpu_ms_per_frame, 3)  # the share below is of the two figures as reported
    return {
        "frames": d.frames, "bare_frames": len(frames), "cameras": opts.cameras, "max_batch": opts.max_batch,
        "threads": opts.threads, "workers": opts.workers,
        "providers": before["providers"], "sessions": before["sessions"], "threads_per_session": before["threads"],
        "pipeline_fps": round(d.rate.per_s, 1), "bare_fps": round(baseline, 1),
        "bare_session_fps": round(mean["session_fps"], 1), "bare_layout_fps": round(mean["layout_fps"], 1),
        "bare_path_fps": round(mean["path_fps"], 1),
        "bare_fps_runs": [round(max(b["session_fps"], b["layout_fps"]), 1) for b in (before, after)],
        "efficiency": round(d.rate.per_s / baseline, 3),
        "efficiency_vs_path": round(d.rate.per_s / mean["path_fps"], 3), "worker_rss_mb": round(d.rss_mb, 1),
        "goal": 0.85, **({"gpu": d.gpu} if d.gpu else {}), "cpu_ms_per_frame": cpu_ms, **top,
        "ceiling_over_bare": round(top["ceiling_fps"] / baseline, 3),
        "around_model_cpu_share": round(top["ceiling_cpu_ms_per_frame"] / cpu_ms, 3),
    }
