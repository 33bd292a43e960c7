"""`aimass bench` runs end to end (its quick form: small workloads, so the figures mean nothing here; the
speed goals are judged by `make bench`, never by a test)."""

from __future__ import annotations

import os

import pytest

from aimass.bench import latency, scaling
from aimass.bench.detector import DetectorOptions
from aimass.bench.fleet import Fleet
from aimass.bench.run import BenchOptions, run_bench
from aimass.settings import DEFAULT_SITE_FILE
from aimass.site import load_site

pytestmark = pytest.mark.e2e


def test_quick_bench_measures_every_ratio_against_its_baseline():
    results = run_bench(load_site(DEFAULT_SITE_FILE), BenchOptions(only=("detector", "rules", "sink"), quick=True),
                        say=lambda _: None)
    d, r, s = results["detector"], results["rules"], results["sink"]
    # The drain lasts at least drain_s (quick: 1 s) at the bare rate measured before it, on the cameras'
    # 60 frames over again where they drain faster.
    assert d["bare_frames"] == 60 and d["frames"] >= max(60, 0.99 * d["bare_fps_runs"][0] * 1.0)
    assert d["pipeline_fps"] > 0 and d["bare_session_fps"] > 0 and d["bare_layout_fps"] > 0
    assert d["bare_fps"] == max(d["bare_session_fps"], d["bare_layout_fps"])  # the faster bare is the baseline
    assert 0 < d["efficiency"] < 3
    # The ceiling: a free model's drain, faster than the real one's, costing less CPU a frame.
    assert d["ceiling_frames"] == 400 and d["ceiling_fps"] > d["pipeline_fps"]
    assert 0 < d["ceiling_cpu_ms_per_frame"] < d["cpu_ms_per_frame"]
    assert d["around_model_cpu_share"] == round(d["ceiling_cpu_ms_per_frame"] / d["cpu_ms_per_frame"], 3)
    assert r["messages"] == 40000 and r["worker_msgs_per_s"] > 0 and r["raw_msgs_per_s"] > 0
    assert r["violation_events"] > 0  # the generated walkers cross the demo's zones and lines
    assert sum(r["two_workers_shares"]) == 40000 and min(r["two_workers_shares"]) > 0  # both had partitions
    assert r["two_workers_msgs_per_s"] > 0
    # CPU a message: the worker decodes and evaluates what the raw consumer only reads; a core's worth of
    # it is the most one process can do.
    assert 0 < r["raw_cpu_us_per_msg"] < r["worker_cpu_us_per_msg"] < 1000
    assert r["one_core_msgs_per_s"] == round(1e6 / r["worker_cpu_us_per_msg"])
    assert r["one_core_ratio"] == pytest.approx(r["one_core_msgs_per_s"] / r["raw_msgs_per_s"], abs=0.002)
    assert s["rows"] == 20000 * 4 and s["ratio"] > 0  # 10 batches of 2000 messages: no steady rate to speak of
    assert s["two_workers_rows_per_s"] > 0 and s["two_workers_ratio"] > 0
    assert [p["ratio"] for p in s["pairs"]] == [s["ratio"]] == s["ratio_range"][:1]  # quick: one pair
    # CPU a row of each client and of the server: the sink maps and decodes what raw inserts ready-made.
    assert 0 < s["raw_cpu_us_per_row"] < s["sink_cpu_us_per_row"] < 1000
    assert s["sink_server_cpu_us_per_row"] > 0 and s["raw_server_cpu_us_per_row"] > 0
    assert results["machine"]["cores"] >= 1


def test_quick_detector_section_with_two_workers_drains_through_both():
    # What a GPU host runs to keep its GPU busy (--detector-workers 2): one group, frames after both joined.
    results = run_bench(load_site(DEFAULT_SITE_FILE), BenchOptions(only=("detector",), quick=True, detector_workers=2),
                        say=lambda _: None)
    d = results["detector"]
    assert d["workers"] == 2 and d["frames"] >= 60 and d["pipeline_fps"] > 0 and d["ceiling_fps"] > 0
    # Both workers' CPU and memory: more than one worker's idle ~300 MiB each.
    assert d["worker_rss_mb"] > 2 * 200 and d["cpu_ms_per_frame"] > 0


def test_scaling_doubles_cameras_up_to_the_capacity_it_is_given(tmp_path):
    # A made-up capacity of 4 frames/s: one camera at 2 fps, then two; each step's frames all come back.
    opts = scaling.ScalingOptions(steps=(1,), seconds=3, capacity_fps=4.0,
                                  detector=DetectorOptions(frames_per_camera=5, cameras=2))
    # Scaling stores nothing: its stack is the broker alone (what a GPU host without ClickHouse runs).
    with Fleet(tmp_path, load_site(DEFAULT_SITE_FILE), clickhouse=False) as fleet:
        assert fleet.info.clickhouse_pid == 0 and fleet.info.clickhouse_url == ""
        sc = scaling.run(fleet, opts)
    assert sc["fps_per_camera"] == 2.0 and [st["cameras"] for st in sc["steps"]] == [1, 2]
    for st in sc["steps"]:
        assert st["frames_sent"] == st["cameras"] * 6 and st["frames_detected"] == st["frames_sent"]
        assert st["latency_ms"]["p50"] > 0 and st["rss_mb"] > 100
        # The worker's CPU over the step: some, and less than the host has (it read the right process).
        assert 0.0 < st["cpu_cores"] < 2.0 * (os.cpu_count() or 1) and st["cpu_per_camera"] >= 0.0
        # Two cameras at 2 fps: the sender keeps their clocks, so what it offered is what they asked.
        assert st["sender_behind_ms"] < 1000 and st["offered_fps"] == pytest.approx(2.0 * st["cameras"], rel=0.2)
    assert sc["kept_up_with_cameras"] in (0, 1, 2)
    assert 0.0 <= sc["idle_cpu_cores"] < max(st["cpu_cores"] for st in sc["steps"])
    assert sc["workers"]["one_worker_fps"] > 0 and sc["workers"]["two_workers_fps"] > 0


def test_latency_follows_each_frame_from_capture_to_its_row(tmp_path):
    # The site's four cameras at 1 fps each (half of a made-up 8 frames/s) for 6 s, through detector,
    # rules and sink.
    with Fleet(tmp_path, load_site(DEFAULT_SITE_FILE)) as fleet:
        lat = latency.run(fleet, latency.LatencyOptions(cameras=4, seconds=6), capacity_fps=8.0)
    assert lat["fps_per_camera"] == 1.0 and lat["frames_sent"] == 24
    # Every frame reached ClickHouse; the percentiles are of those after the 3 s warm-up, the rest apart.
    steady, warm = lat["capture_to_row_ms"]["n"], lat["warmup_capture_to_detections_ms"]["n"]
    assert lat["frames_in_clickhouse"] == 24 and steady + warm == 24 and 8 <= steady <= 16
    assert set(lat["stages_ms"]) == {name for name, _, _ in latency.STAGES}
    assert all(p["p50"] >= 0 for p in lat["stages_ms"].values())
    assert lat["capture_to_row_ms"]["p50"] >= lat["stages_ms"]["capture -> detections"]["p50"]
