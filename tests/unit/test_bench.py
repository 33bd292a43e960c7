"""The bench's own logic: rates from counter samples, percentiles, generated workloads, the report."""

from __future__ import annotations

import math
import os
import re
import time

import pytest
from conftest import wait_until

from aimass import contracts
from aimass.bench import probe, report, scaling, workload
from aimass.contracts import Detections
from aimass.settings import DEFAULT_SITE_FILE
from aimass.site import load_site


def test_crossing_interpolates_between_samples():
    samples = [(0.0, 0.0), (1.0, 100.0), (2.0, 300.0)]
    assert probe.crossing(samples, 50.0) == pytest.approx(0.5)
    assert probe.crossing(samples, 200.0) == pytest.approx(1.5)
    assert probe.crossing(samples, 0.0) == 0.0  # reached at the first sample


def test_rate_between_leaves_out_start_up_and_stragglers():
    # Nothing for 5 s (start-up), then 100/s for 10 s, then a slow tail: the steady rate is 100/s.
    samples = [(t, 0.0) for t in range(6)] + [(5.0 + k, 100.0 * k) for k in range(1, 11)] + [(30.0, 1000.0)]
    rate = probe.rate_between(samples, 1000.0, lo=0.1, hi=0.9)
    assert rate.per_s == pytest.approx(100.0)
    assert rate.window_s == pytest.approx(8.0)


def test_steady_rate_fails_when_the_worker_dies():
    with pytest.raises(RuntimeError, match="exited"):
        probe.steady_rate(lambda: 0.0, 10, deadline_s=5, alive=lambda: False)


def test_percentiles():
    p = probe.percentiles(list(range(1, 101)))
    assert p["p50"] == pytest.approx(50.5)
    assert p["p99"] == pytest.approx(99.0, abs=0.1)
    assert all(math.isnan(v) for v in probe.percentiles([]).values())


def test_cameras_beyond_the_site_are_copies_with_their_own_ids():
    site = load_site(DEFAULT_SITE_FILE)
    cams = workload.cameras(site, 9)
    assert len(cams) == 9
    assert len({c.id for c in cams}) == 9
    scripted = [c for c in site.cameras if c.scene is not None]
    assert cams[len(scripted)].scene == scripted[0].scene


def test_detection_messages_are_valid_contracts_in_camera_order():
    msgs = workload.detection_messages(["a", "b"], per_camera=5, objects=3, site_id="s")
    assert len(msgs) == 10
    decoded = [contracts.decode(v, Detections) for _, v in msgs]
    assert [d.camera_id for d in decoded[:4]] == ["a", "b", "a", "b"]
    assert all(len(d.objects) == 3 and d.site_id == "s" for d in decoded)
    for cam in ("a", "b"):
        times = [d.captured_ms for d in decoded if d.camera_id == cam]
        assert times == sorted(times) and [d.seq for d in decoded if d.camera_id == cam] == list(range(5))
    assert all(0.0 <= o.x1 <= o.x2 <= 1.0 and 0.0 <= o.y1 <= o.y2 <= 1.0 for d in decoded for o in d.objects)


def test_interleave_round_robins_cameras():
    frames = {"a": ["a0", "a1"], "b": ["b0"]}
    assert workload.interleave(frames) == [(0, "a0"), (0, "b0"), (1, "a1")]


class FakeClock:
    """Stands in for the probe's ``time``: sleeping moves the clock on at once."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_combined_rate_counts_only_while_every_worker_works(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(probe, "time", clock)
    # Worker a reads 100/s from t=0; b joins at t=3 and reads 100/s too: together 200/s from there.
    a = lambda: 100.0 * clock.now  # noqa: E731
    b = lambda: 100.0 * max(0.0, clock.now - 3)  # noqa: E731
    rate, last = probe.combined_rate([a, b], 1000, deadline_s=60, interval_s=1.0)
    assert rate.per_s == pytest.approx(200.0)  # from the first sample with both counting (t=4) to 900 (t=6)
    assert rate.window_s == pytest.approx(2.0)
    assert last == [700.0, 400.0]


def test_combined_rate_stops_when_a_worker_runs_dry(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(probe, "time", clock)
    # Each has 500 to read: a at 100/s is done at t=5, b at 50/s goes on alone until t=10.
    a = lambda: min(100.0 * clock.now, 500.0)  # noqa: E731
    b = lambda: min(50.0 * clock.now, 500.0)  # noqa: E731
    rate, last = probe.combined_rate([a, b], 1000, deadline_s=60, interval_s=1.0)
    # From the first sample with both counting (t=1, 150) to the last with neither done (t=4, 600): 150/s,
    # not the 107/s of a window to 900 (t=8) that reads b alone for its last four seconds.
    assert rate.per_s == pytest.approx(150.0)
    assert rate.window_s == pytest.approx(3.0)
    assert last == [500.0, 500.0]


def test_median_round_is_the_lower_middle_one_with_the_range():
    rounds = [{"ratio": 0.5, "n": 1}, {"ratio": 0.3, "n": 2}, {"ratio": 0.4, "n": 3}, {"ratio": 0.6, "n": 4}]
    assert probe.median_round(rounds[:3], "ratio") == ({"ratio": 0.4, "n": 3}, [0.3, 0.5])
    assert probe.median_round(rounds, "ratio") == ({"ratio": 0.4, "n": 3}, [0.3, 0.6])  # even: the lower middle


def test_combined_rate_reads_to_hi_when_no_sample_has_all_at_work(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(probe, "time", clock)
    early = lambda: min(100.0 * clock.now, 150.0)  # noqa: E731  (done at t=1.5, before the other began)
    late = lambda: 0.0 if clock.now < 1.9 else min(100.0 * (clock.now - 1.9), 850.0)  # noqa: E731
    rate, _ = probe.combined_rate([early, late], 1000, deadline_s=60, interval_s=1.0)
    assert rate.per_s == pytest.approx(100.0)  # from t=2 (160) to 900 (t=9.4)


def test_combined_rate_refuses_when_a_worker_began_too_late(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(probe, "time", clock)
    late = lambda: 0.0 if clock.now < 9.5 else 1.0  # noqa: E731
    with pytest.raises(RuntimeError, match="began counting only after"):
        probe.combined_rate([lambda: 100.0 * clock.now, late], 1000, deadline_s=60, interval_s=1.0)


def test_site_with_moves_rules_to_the_cameras_that_show_their_scenes():
    from aimass.kafka import partition_for

    site = load_site(DEFAULT_SITE_FILE)
    scenes = ("cam-gate", "cam-yard", "cam-lobby", "cam-dock")
    placed = workload.site_with(site, 4, spread=4, scenes=scenes)
    assert [partition_for(c.id.encode(), 4) for c in placed.cameras] == [0, 1, 2, 3]
    assert [c.scene for c in placed.cameras] == [site.camera(s).scene for s in scenes]
    # A renamed camera takes over its original's rules, ids unchanged: the same rules, each on one camera.
    assert sorted(r.id for r in placed.rules) == sorted(r.id for r in site.rules)
    shown = {c.id for c in placed.cameras}
    assert all(r.camera in shown for r in placed.rules if getattr(r, "camera", None))
    yard = placed.cameras[1]
    assert yard.id != "cam-yard" and sorted(r.id for r in placed.rules if getattr(r, "camera", None) == yard.id) == \
        sorted(r.id for r in site.rules if getattr(r, "camera", None) == "cam-yard")
    # Copies beside their originals get copies of the rules, under ids of their own; the site stays valid.
    eight = workload.site_with(site, 8, spread=4)
    ids = [r.id for r in eight.rules]
    assert len(ids) == len(set(ids)) and len([r for r in eight.rules if getattr(r, "camera", None)]) == 16
    from aimass.site import Site
    Site.model_validate(eight.model_dump())
    with pytest.raises(ValueError, match="not all of them are cameras"):
        workload.site_with(site, 2, scenes=("cam-gate", "cam-nowhere"))


def test_cameras_spread_one_per_partition():
    from aimass.kafka import partition_for

    site = load_site(DEFAULT_SITE_FILE)
    assert [partition_for(c.id.encode(), 4) for c in workload.cameras(site, 4)] == [0, 1, 0, 3]  # why spread exists
    for n, partitions in ((4, 4), (8, 4), (6, 3)):
        cams = workload.cameras(site, n, spread=partitions)
        assert [partition_for(c.id.encode(), partitions) for c in cams] == [i % partitions for i in range(n)]
        assert len({c.id for c in cams}) == n
        scripted = [c for c in site.cameras if c.scene is not None]
        assert [c.scene for c in cams] == [scripted[i % len(scripted)].scene for i in range(n)]


RESULTS = {
    "detector": {"pipeline_fps": 38.0, "bare_fps": 50.0, "efficiency": 0.76, "goal": 0.85, "cpu_ms_per_frame": 40.0,
                 "ceiling_fps": 400.0, "ceiling_over_bare": 8.0, "ceiling_cpu_ms_per_frame": 3.2,
                 "around_model_cpu_share": 0.08},
    "rules": {"worker_msgs_per_s": 1000, "raw_msgs_per_s": 150000, "ratio": 0.007, "goal": 0.5,
              "goal_msgs_per_s": 20000, "noop_msgs_per_s": 6000, "two_workers_msgs_per_s": 1800,
              "two_workers_ratio": 0.012, "two_over_one": 1.8, "worker_cpu_us_per_msg": 11.2, "raw_cpu_us_per_msg": 2.4,
              "one_core_msgs_per_s": 89286, "one_core_ratio": 0.595, "rounds": [{}, {}, {}],
              "ratio_range": [0.005, 0.009], "two_workers_ratio_range": [0.01, 0.02]},
    "sink": {"sink_rows_per_s": 90000, "raw_rows_per_s": 100000, "ratio": 0.9, "goal": 0.8, "ratio_range": [0.62, 1.1],
             "pairs": [{"ratio": 0.62}, {"ratio": 0.9}, {"ratio": 1.1}], "two_workers_rows_per_s": 70000,
             "two_workers_ratio": 0.7, "two_over_one": 0.778, "two_workers_ratio_range": [0.6, 0.95],
             "sink_cpu_us_per_row": 3.9, "sink_server_cpu_us_per_row": 1.6, "raw_cpu_us_per_row": 1.1,
             "raw_server_cpu_us_per_row": 1.5},
    "latency": {"cameras": 4, "fps_per_camera": 4.8, "capacity_fps": 38.0,
                "stages_ms": {"decode": {"p50": 2.0, "p95": 3.0, "p99": 4.0}},
                "capture_to_violation_ms": {"p50": 300.0, "p95": 500.0, "p99": 600.0, "n": 3},
                "capture_to_row_ms": {"p50": 700.0, "p95": 900.0, "p99": 1000.0, "n": 100}, "warmup_s": 3.0,
                "warmup_capture_to_detections_ms": {"p50": 310.0, "p95": 790.0, "p99": 820.0, "n": 12}},
    "scaling": {"fps_per_camera": 2.0, "idle_cpu_cores": 0.03, "steps": [
        {"cameras": 1, "offered_fps": 2.0, "detected_fps": 2.0, "latency_ms": {"p50": 60.0, "p95": 90.0},
         "rss_mb": 230.0, "rss_per_camera_mb": 1.0, "cpu_cores": 0.12, "cpu_per_camera": 0.09}],
        "kept_up_with_cameras": 1, "kept_up_share": 0.9,
        "workers": {"one_worker_fps": 38.0, "two_workers_fps": 30.0, "two_over_one": 0.79, "sessions_each": [2, 1],
                    "threads_per_session": 1}},
}


def test_tables_printed_to_a_log_keep_every_cell_whole():
    import io

    from rich.console import Console

    log = io.StringIO()
    report.print_tables(RESULTS, Console(file=log, width=80))  # a file: no terminal, rich's 80 columns
    text = log.getvalue()
    assert "…" not in text and "0.9 (0.62-1.1)" in text and "100000 (raw clickhouse-driver)" in text


def test_cpu_use_counts_the_process_s_cpu_over_the_block():
    with probe.CpuUse(os.getpid()) as use:
        end = time.process_time() + 0.2
        while time.process_time() < end:  # 0.2 s of this process's CPU, however long the host takes
            pass
    assert use.cores > 0.0
    # The 0.2 s burnt, and little else. /proc counts whole clock ticks, read at both ends: up to a tick
    # lost at each (0.18999999999999995 s was read for 19 ticks of 10 ms).
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert 0.2 - 2 * tick - 1e-9 <= use.seconds < 1.0


def test_cpu_a_unit_is_read_over_the_counter_s_steady_window(monkeypatch):
    # A worker's CPU read beside its counter: 2 s of start-up CPU before its first unit, then 1 ms a unit.
    readings = iter([(0, 2.0), (0, 2.0), (150, 2.15), (500, 2.5), (950, 2.95), (1000, 3.0), (1000, 3.2)])
    current = {}

    def counter() -> float:
        current["count"], current["cpu"] = next(readings)
        return current["count"]

    monkeypatch.setattr(probe, "cpu_seconds", lambda *pids: current["cpu"])
    cpu = probe.CpuSamples([123])
    read = cpu.reading(counter)
    while read() < 1000:
        pass
    assert cpu.per_unit(1000) == pytest.approx(0.001)  # from the reading past 100 to the one past 900
    # Where the window holds no two readings apart, the first and the last.
    few = probe.CpuSamples([123], samples=[(0, 1.0), (1000, 2.0)])
    assert few.per_unit(1000) == pytest.approx(0.001)


def _says(text: str, phrase: str) -> bool:
    """Whether a printed table holds ``phrase``, wherever rich wrapped its title or caption."""
    return re.search(r"\s+".join(map(re.escape, phrase.split())), text) is not None


def test_report_says_which_goals_are_met():
    from rich.console import Console

    console = Console(record=True, width=200)
    report.print_tables(RESULTS, console)
    text = console.export_text()
    assert "detector frames/s" in text and "capture -> row in ClickHouse" in text
    # The latency table is of the steady frames; the warm-up's are shown apart, not dropped.
    assert _says(text, "frames after the first 3 s")
    warm = next(line for line in text.splitlines() if "workers just started" in line)
    assert [cell.strip() for cell in warm.split("│")[2:5]] == ["310.0", "790.0", "820.0"]
    lines = {line.split("│")[1].strip() + line.split("│")[3].strip(): line for line in text.splitlines()
             if line.count("│") > 5}
    assert "not met" in next(v for k, v in lines.items() if k.startswith("detector"))
    assert [c.strip() for c in lines["ceiling (a model costing nothing)50.0 (bare ONNX Runtime)"].split("│")[2:6]] == [
        "400.0", "50.0 (bare ONNX Runtime)", "x8.0", ""]  # no goal of its own: what bounds the worker
    assert [c.strip() for c in lines["CPU a frame around the model40.0 ms (with the model)"].split("│")[2:5]] == [
        "3.2 ms", "40.0 ms (with the model)", "0.08"]
    two_rules = next(v for k, v in lines.items() if k.startswith("2 workers"))
    assert "1800 (x1.8 of one)" in two_rules and "0.012 (0.01-0.02)" in two_rules
    rules_line = next(v for k, v in lines.items() if k.startswith("rules messages/s (median"))
    assert "median of 3 rounds" in rules_line and "0.007 (0.005-0.009)" in rules_line
    sink = next(v for k, v in lines.items() if k.startswith("sink rows/s"))
    assert "met" in sink and "not met" not in sink  # judged by the median pair, though one pair fell short
    assert "median of 3 pairs" in sink and "0.9 (0.62-1.1)" in sink
    two_sinks = lines["2 workers (one group)100000 (raw clickhouse-driver)"]
    assert "70000 (x0.778 of one)" in two_sinks and "0.7 (0.6-0.95)" in two_sinks and "not met" in two_sinks
    # What each costs in CPU, beside the rates: no goal of their own, what bounds the ratios.
    assert [c.strip() for c in lines["CPU a message (a core's worth)2.4 µs (raw aiokafka)"].split("│")[2:6]] == [
        "11.2 µs (89286/s)", "2.4 µs (raw aiokafka)", "≤ 0.595", ""]
    sink_cpu = lines["CPU a row: client + ClickHouse1.1 + 1.5 µs (raw clickhouse-driver)"]
    assert [c.strip() for c in sink_cpu.split("│")[2:6]] == [
        "3.9 + 1.6 µs", "1.1 + 1.5 µs (raw clickhouse-driver)", "", ""]
    # Results written before the CPU was measured print without those rows.
    old = {**RESULTS, "rules": {k: v for k, v in RESULTS["rules"].items() if "cpu" not in k},
           "sink": {k: v for k, v in RESULTS["sink"].items() if "cpu" not in k}}
    console = Console(record=True, width=200)
    report.print_tables(old, console)
    assert "CPU a message" not in console.export_text() and "CPU a row" not in console.export_text()


def test_report_shows_gpu_use_per_scaling_step_only_where_measured():
    from rich.console import Console

    def scaling_table(steps):
        console = Console(record=True, width=200)
        report.print_tables({"scaling": {**RESULTS["scaling"], "steps": steps}}, console)
        return console.export_text()

    step = RESULTS["scaling"]["steps"][0]
    text = scaling_table([step, {**step, "cameras": 2, "gpu": {"gpu_util_mean_pct": 41.5, "gpu_util_max_pct": 63.0,
                                                               "gpu_mem_max_mb": 900.0}}])
    assert "GPU % mean/max" in text and "41.5/63" in text
    assert "kept up with 1 cameras at 2.0 fps (>= 90% of the" in text
    assert "GPU %" not in scaling_table([step])
    # The worker's CPU per step, and with no camera; results from before it was measured have no column.
    assert "CPU cores" in text and "│ 0.12 " in text
    assert _says(text, "CPU with no camera 0.030 cores")
    old = {k: v for k, v in step.items() if k not in ("cpu_cores", "cpu_per_camera")}
    assert "CPU cores" not in scaling_table([old])
    assert "sender fell behind" not in text
    late = scaling_table([step, {**step, "cameras": 64, "sender_behind_ms": 2400.0}])
    assert _says(late, "the bench's sender fell behind the cameras' clocks from 64 cameras (by 2.4 s)")


def test_report_names_the_detector_workers_where_there_were_several():
    from rich.console import Console

    def text(results):
        console = Console(record=True, width=200)
        report.print_tables(results, console)
        return console.export_text()

    one = text({"detector": RESULTS["detector"], "scaling": RESULTS["scaling"]})
    assert "Scaling: one detector worker, 2.0 fps" in one and "workers)" not in one
    two = text({"detector": {**RESULTS["detector"], "workers": 2},
                "scaling": {**RESULTS["scaling"], "detector_workers": 2}})
    assert "detector frames/s (2 workers)" in two and "Scaling: 2 detector workers (one group), 2.0 fps" in two


@pytest.mark.parametrize("capacity, fps, steps", [
    (0.0, 2.0, [1, 2, 4, 8, 16]),  # no capacity measured: the given steps
    (28.0, 2.0, [1, 2, 4, 8, 16]),  # 16 cameras at 2 fps already offer it
    (50.0, 2.0, [1, 2, 4, 8, 16, 32]),  # a CPU: 2 fps, then 32 cameras offer more than it
    (400.0, 12.5, [1, 2, 4, 8, 16, 32]),  # a GPU: 16 cameras offer half of it, 32 all of it
    (10000.0, 312.5, [1, 2, 4, 8, 16, 32]),
])
def test_scaling_plan_doubles_cameras_until_they_offer_the_capacity(capacity, fps, steps):
    assert scaling.plan(scaling.ScalingOptions(capacity_fps=capacity)) == (fps, steps)


def test_scaling_plan_stops_at_the_most_cameras():
    assert scaling.plan(scaling.ScalingOptions(capacity_fps=1000.0, fps_per_camera=5.0, steps=(1, 2),
                                               max_cameras=32)) == (250.0, [1, 2, 4])
    assert scaling.plan(scaling.ScalingOptions(capacity_fps=90.0, steps=(1, 2), max_cameras=16)) == (22.5, [1, 2, 4])
    assert scaling.plan(scaling.ScalingOptions(capacity_fps=90.0, steps=(1,), max_cameras=2)) == (45.0, [1, 2])


def test_kept_up_with_is_the_last_step_before_the_first_that_fell_behind():
    def step(n, offered, detected):
        return {"cameras": n, "offered_fps": offered, "detected_fps": detected}

    assert scaling.kept_up_with([step(1, 2, 2), step(2, 4, 3.9), step(4, 8, 6.0), step(8, 16, 16)]) == 2
    assert scaling.kept_up_with([step(1, 2, 1.0)]) == 0
    assert scaling.kept_up_with([step(1, 2, 2), step(2, 4, 4)]) == 2


def test_render_shares_a_scene_between_a_camera_and_its_copies():
    site = load_site(DEFAULT_SITE_FILE)
    cams = workload.cameras(site, 2 * len([c for c in site.cameras if c.scene is not None]))
    frames = workload.render(cams, 2)
    copy, original = cams[-1], next(c for c in cams if c.scene == cams[-1].scene and c.id != cams[-1].id)
    assert [f.jpeg for f in frames[copy.id]] == [f.jpeg for f in frames[original.id]]
    assert all(f.camera_id == copy.id for f in frames[copy.id])
    other = next(c for c in cams if c.scene.background != copy.scene.background)
    assert frames[other.id][0].jpeg != frames[copy.id][0].jpeg  # another scene, other frames


def test_report_writes_json_and_a_chart_when_matplotlib_is_there(tmp_path):
    written = report.write(RESULTS, tmp_path)
    assert (tmp_path / "bench.json").exists()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert written == [tmp_path / "bench.json"]
    else:
        png = tmp_path / "bench.png"
        assert png in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gpu_use_is_sampled_from_nvidia_smi_for_the_workers_device(tmp_path, monkeypatch):
    # No GPU here: a stand-in nvidia-smi answers as the real one does, for the device it is asked about.
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\ncase "$*" in *--id=1*) echo "37, 1234";; *) echo "99, 1";; esac\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("AIMASS_DETECTOR_DEVICE_ID", "1")
    with probe.GpuSampler(interval_s=0.02) as gpu:
        wait_until(lambda: len(gpu.util) >= 2, 20, "two samples", interval_s=0.02)
    assert gpu.summary() == {"gpu_util_mean_pct": 37.0, "gpu_util_max_pct": 37.0, "gpu_mem_max_mb": 1234.0}
    assert probe.GpuSampler(device=0).device == 0


def test_a_drain_lasts_drain_s_at_the_rate_with_the_cameras_frames_at_least():
    from aimass.bench.detector import DetectorOptions

    opts = DetectorOptions(frames_per_camera=60, drain_s=5.0)
    assert opts.per_camera(500.0, 4) == 625  # a GPU's rate: 2500 frames, 5 s
    assert opts.per_camera(501.0, 4) == 627  # rounded up: never shorter than drain_s
    assert opts.per_camera(40.0, 4) == 60  # a slow host: the cameras' own frames already last longer
