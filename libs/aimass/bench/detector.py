"""Detector efficiency: frames/s through Kafka -> detector worker -> detections topic, divided by bare
ONNX Runtime frames/s on the same frames (decoded and prepared beforehand), same model, batch size and
threads. The frames wait in Kafka before the worker starts, so the worker drains a backlog at its
own pace and nothing else competes for the cores; bare runs before and after it and is averaged."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aimass import contracts
from aimass.bench import probe, workload
from aimass.bench.fleet import Fleet
from aimass.settings import DetectorSettings


@dataclass
class DetectorOptions:
    frames_per_camera: int = 60
    cameras: int = 4
    providers: str = ""  # as the detector's setting: empty = best available
    threads: int = 0
    max_batch: int = 4


def bare(frames: list[workload.EncodedFrame], opts: DetectorOptions, model_dir, rounds: int = 1) -> dict:
    """Frames/s of ``session.run`` alone on prepared batches of ``max_batch``, and of the detector's
    own decode -> prepare -> run -> decode path, on ``frames``."""
    from aimass_detector.engine import Detector
    from aimass_detector.serving import detector_options

    # The worker's own options (IO binding, GPU device...), with this run's providers and threads, and
    # ONNX Runtime's own default for spinning threads (on): bare as fast as it goes alone, not as the worker.
    options = {**detector_options(DetectorSettings()), "providers": [p for p in opts.providers.split(",") if p] or None,
               "threads": opts.threads or None, "spinning": None}
    det = Detector.from_folder(model_dir, **options)
    det.warmup(opts.max_batch)
    images = [det.decode_jpeg(f.jpeg) for f in frames]
    batches = [images[i:i + opts.max_batch] for i in range(0, len(images), opts.max_batch)]
    feeds = [det.adapter.prepare(b) for b in batches]
    names = det.adapter.output_names
    # Feeds are prepared into one reused buffer by some adapters: copy them so each batch keeps its own.
    feeds = [{k: v.copy() for k, v in f.items()} for f in feeds]
    run_s = []
    for _ in range(rounds):
        t = time.perf_counter()
        for f in feeds:
            det.infer(names, f)
        run_s.append(time.perf_counter() - t)
    t = time.perf_counter()
    for b in [frames[i:i + opts.max_batch] for i in range(0, len(frames), opts.max_batch)]:
        det.detect([det.decode_jpeg(f.jpeg) for f in b])
    path_s = time.perf_counter() - t
    return {"session_fps": len(frames) / min(run_s), "path_fps": len(frames) / path_s,
            "providers": det.providers}


def drain(fleet: Fleet, name: str, cams, ordered, opts: DetectorOptions, workers: int = 1,
          join_first: bool = False) -> tuple[probe.Rate, float, dict | None]:
    """``workers`` detector processes drain the frames from a fresh namespace's frames topic. The frames
    are produced before the workers start, so producing costs the measurement nothing; with
    ``join_first`` the workers join first and the frames follow, so no rebalance (a second worker
    joining) falls inside the measurement. Returns (the combined rate, the first's RSS in MiB, GPU use)."""
    site = fleet.site
    ns = fleet.namespace(name, site=site.model_copy(update={"cameras": cams}))
    env = {"AIMASS_MAX_BATCH": str(opts.max_batch), "AIMASS_THREADS": str(opts.threads),
           "AIMASS_PROVIDERS": opts.providers, "AIMASS_MAX_FRAME_AGE_S": "3600"}
    now = contracts.now_ms()
    messages = [(f.camera_id.encode(), workload.frame_message(f, seq, now - 1000 + seq, site.site.id))
                for seq, f in ordered]

    def produce() -> None:
        asyncio.run(workload.produce(ns.settings(), contracts.TOPIC_FRAMES, messages))
    if not join_first:
        produce()
    started = [ns.start("detector", env) for _ in range(workers)]
    with probe.GpuSampler() as gpu:
        if join_first:
            produce()
        rate = probe.steady_rate(lambda: sum(probe.counter(w.metrics_port, "aimass_frames") for w in started),
                                 len(messages), 300, alive=lambda: all(w.alive() for w in started))
        rss = probe.rss_mb(started[0].proc.pid)
    ns.stop()
    return rate, rss, gpu.summary()


def run(fleet: Fleet, opts: DetectorOptions) -> dict:
    cams = workload.cameras(fleet.site, opts.cameras)
    ordered = workload.interleave(workload.render(cams, opts.frames_per_camera))
    frames = [f for _, f in ordered]
    model_dir = DetectorSettings().model_dir
    before = bare(frames, opts, model_dir)
    rate, rss, gpu = drain(fleet, "detector", cams, ordered, opts)
    after = bare(frames, opts, model_dir)
    session_fps = (before["session_fps"] + after["session_fps"]) / 2
    path_fps = (before["path_fps"] + after["path_fps"]) / 2
    return {
        "frames": len(frames), "cameras": opts.cameras, "max_batch": opts.max_batch, "threads": opts.threads,
        "providers": before["providers"], "pipeline_fps": round(rate.per_s, 1), "bare_session_fps": round(session_fps, 1),
        "bare_path_fps": round(path_fps, 1), "bare_session_fps_runs": [round(before["session_fps"], 1),
                                                                       round(after["session_fps"], 1)],
        "efficiency": round(rate.per_s / session_fps, 3),
        "efficiency_vs_path": round(rate.per_s / path_fps, 3), "worker_rss_mb": round(rss, 1),
        "goal": 0.85, **({"gpu": gpu} if gpu else {}),
    }
