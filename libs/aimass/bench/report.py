"""The bench's results as a table on the terminal, bench.json and bench.png."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


SENDER_LAG_MS = 500  # a scaling step's sender this late at its end is worth a word in the table


def _ok(value: float | None, goal: float) -> str:
    if value is None:
        return "-"
    return "[green]met[/]" if value >= goal else "[red]not met[/]"


def _workers(sc: dict) -> str:
    n = sc.get("detector_workers", 1)  # results from before the option: one
    return "one detector worker" if n == 1 else f"{n} detector workers (one group)"


def tables(results: dict) -> list[Table]:
    out = []
    t = Table(title="Ratios (measured in this run)")
    for col in ("what", "through the product", "baseline", "ratio", "goal", ""):
        t.add_column(col, overflow="fold")
    if d := results.get("detector"):
        workers = d.get("workers", 1)
        t.add_row("detector frames/s" + (f" ({workers} workers)" if workers > 1 else ""), f"{d['pipeline_fps']}",
                  f"{d['bare_fps']} (bare ONNX Runtime)", f"{d['efficiency']}", f"≥ {d['goal']}", _ok(d["efficiency"], d["goal"]))
        if "ceiling_fps" in d:  # results written before the ceiling was measured have none
            t.add_row("  ceiling (a model costing nothing)", f"{d['ceiling_fps']}", f"{d['bare_fps']} (bare ONNX Runtime)",
                      f"x{d['ceiling_over_bare']}", "", "")
            t.add_row("  CPU a frame around the model", f"{d['ceiling_cpu_ms_per_frame']} ms",
                      f"{d['cpu_ms_per_frame']} ms (with the model)", f"{d['around_model_cpu_share']}", "", "")
    if r := results.get("rules"):
        rounds = len(r.get("rounds", ())) > 1

        def rules_ratio(key: str) -> str:  # the median round's ratio, and with several rounds their range
            return f"{r[key]}" + (" ({}-{})".format(*r[f"{key}_range"]) if rounds else "")

        t.add_row("rules messages/s" + (f" (median of {len(r['rounds'])} rounds)" if rounds else ""),
                  f"{r['worker_msgs_per_s']}", f"{r['raw_msgs_per_s']} (raw aiokafka)", rules_ratio("ratio"),
                  f"≥ {r['goal']}", _ok(r["ratio"], r["goal"]))
        t.add_row("rules messages/s", f"{r['worker_msgs_per_s']}", "20000 per worker", "", "≥ 20000",
                  _ok(r["worker_msgs_per_s"], r["goal_msgs_per_s"]))
        if "two_workers_msgs_per_s" in r:
            t.add_row("  2 workers (one group)", f"{r['two_workers_msgs_per_s']} (x{r['two_over_one']} of one)",
                      f"{r['raw_msgs_per_s']} (raw aiokafka)",
                      rules_ratio("two_workers_ratio") if "two_workers_ratio_range" in r else f"{r['two_workers_ratio']}",
                      f"≥ {r['goal']}", _ok(r["two_workers_ratio"], r["goal"]))
        t.add_row("  (plumbing, doing nothing)", f"{r['noop_msgs_per_s']}", f"{r['raw_msgs_per_s']} (raw aiokafka)",
                  f"{round(r['noop_msgs_per_s'] / r['raw_msgs_per_s'], 3)}", "", "")
        if "worker_cpu_us_per_msg" in r:  # results from before it was measured have none
            # A core's worth of the worker's CPU a message: the most one process can do, against raw.
            t.add_row("  CPU a message (a core's worth)",
                      f"{r['worker_cpu_us_per_msg']} µs ({r['one_core_msgs_per_s']}/s)",
                      f"{r['raw_cpu_us_per_msg']} µs (raw aiokafka)", f"≤ {r['one_core_ratio']}", "", "")
    if s := results.get("sink"):
        pairs = len(s.get("pairs", ())) > 1

        def ratio(key: str) -> str:  # the median pair's ratio, and with several pairs their range
            return f"{s[key]}" + (" ({}-{})".format(*s[f"{key}_range"]) if pairs else "")

        t.add_row("sink rows/s" + (f" (median of {len(s['pairs'])} pairs)" if pairs else ""), f"{s['sink_rows_per_s']}",
                  f"{s['raw_rows_per_s']} (raw clickhouse-driver)", ratio("ratio"), f"≥ {s['goal']}",
                  _ok(s["ratio"], s["goal"]))
        if "sink_cpu_us_per_row" in s:  # the median pair's; the server's shares the cores with the client
            t.add_row("  CPU a row: client + ClickHouse",
                      f"{s['sink_cpu_us_per_row']} + {s['sink_server_cpu_us_per_row']} µs",
                      f"{s['raw_cpu_us_per_row']} + {s['raw_server_cpu_us_per_row']} µs (raw clickhouse-driver)",
                      "", "", "")
        if "two_workers_rows_per_s" in s:
            t.add_row("  2 workers (one group)", f"{s['two_workers_rows_per_s']} (x{s['two_over_one']} of one)",
                      f"{s['raw_rows_per_s']} (raw clickhouse-driver)", ratio("two_workers_ratio"), f"≥ {s['goal']}",
                      _ok(s["two_workers_ratio"], s["goal"]))
    out.append(t)
    if lat := results.get("latency"):
        warmup = lat.get("warmup_s", 0)
        t = Table(title=f"Latency, ms ({lat['cameras']} cameras at {lat['fps_per_camera']} fps = half of "
                        f"{lat['capacity_fps']} frames/s; frames after the first {warmup:g} s)")
        for col in ("stage", "p50", "p95", "p99"):
            t.add_column(col, overflow="fold")
        rows = [*lat["stages_ms"].items(), ("capture -> violation on Kafka", lat["capture_to_violation_ms"]),
                ("capture -> row in ClickHouse", lat["capture_to_row_ms"])]
        if "warmup_capture_to_detections_ms" in lat:
            rows.append((f"first {warmup:g} s, workers just started: capture -> detections",
                         lat["warmup_capture_to_detections_ms"]))
        for name, p in rows:
            t.add_row(name, *(f"{p[k]}" for k in ("p50", "p95", "p99")))
        out.append(t)
    if sc := results.get("scaling"):
        t = Table(title=f"Scaling: {_workers(sc)}, {sc['fps_per_camera']} fps per camera")
        gpu = any("gpu" in st for st in sc["steps"])
        cpu = all("cpu_cores" in st for st in sc["steps"])  # not in results from before it was measured
        for col in ("cameras", "offered fps", "detected fps", "p50 ms", "p95 ms", "RSS MiB", "MiB per camera",
                    *(("CPU cores",) if cpu else ()), *(("GPU % mean/max",) if gpu else ())):
            t.add_column(col, overflow="fold")
        for st in sc["steps"]:
            g = st.get("gpu")
            t.add_row(str(st["cameras"]), str(st["offered_fps"]), str(st["detected_fps"]), str(st["latency_ms"]["p50"]),
                      str(st["latency_ms"]["p95"]), str(st["rss_mb"]), str(st["rss_per_camera_mb"]),
                      *((f"{st['cpu_cores']:.2f}",) if cpu else ()),
                      *((f"{g['gpu_util_mean_pct']}/{g['gpu_util_max_pct']:g}" if g else "-",) if gpu else ()))
        w = sc["workers"]
        threads = w["threads_per_session"] or "ONNX Runtime's"
        kept = sc.get("kept_up_with_cameras")
        # The bench's own sender can fall behind many fast cameras: say so, lest it read as the worker's limit.
        lagging = [st for st in sc["steps"] if st.get("sender_behind_ms", 0) > SENDER_LAG_MS]
        lag_note = (f"the bench's sender fell behind the cameras' clocks from {lagging[0]['cameras']} cameras "
                    f"(by {max(st['sender_behind_ms'] for st in lagging) / 1000:.1f} s): offered is what it sent; "
                    if lagging else "")
        idle = (f"CPU with no camera {sc['idle_cpu_cores']:.3f} cores; " if "idle_cpu_cores" in sc else "")
        t.caption = ((f"kept up with {kept} cameras at {sc['fps_per_camera']} fps (>= {sc['kept_up_share']:.0%} of the "
                      f"frames offered detected in their step); " if kept is not None else "") + idle
                     + lag_note + f"backlog drained by 1 detector ({w['sessions_each'][0]} sessions of {threads} threads): "
                     f"{w['one_worker_fps']} frames/s; by 2 ({w['sessions_each'][1]} sessions each): "
                     f"{w['two_workers_fps']} frames/s (x{w['two_over_one']})")
        out.append(t)
    return out


# Printed to a file or a CI log (no terminal, so rich's 80 columns), the tables get this width: a cell
# wraps rather than loses its end ("0.5 (0.463-0.6…" was all a log kept of a range).
LOG_WIDTH = 160


def print_tables(results: dict, console: Console | None = None) -> None:
    console = console or Console()
    if not console.is_terminal and console.width < LOG_WIDTH:
        console = Console(file=console.file, width=LOG_WIDTH, soft_wrap=console.soft_wrap)
    for t in tables(results):
        console.print(t)


def write(results: dict, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "bench.json"]
    written[0].write_text(json.dumps(results, indent=2))
    png = chart(results, folder / "bench.png")
    return written + ([png] if png else [])


def chart(results: dict, path: Path) -> Path | None:
    """Four panels: ratios against goals, latency by stage, scaling, memory and CPU per step. None when
    matplotlib is not installed (`make bench` installs it)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    ratios = [(k, v) for k, v in (("detector", results.get("detector", {}).get("efficiency")),
                                  ("rules", results.get("rules", {}).get("ratio")),
                                  ("rules, 2 workers", results.get("rules", {}).get("two_workers_ratio")),
                                  ("sink", results.get("sink", {}).get("ratio")),
                                  ("sink, 2 workers", results.get("sink", {}).get("two_workers_ratio"))) if v is not None]
    goals = {"detector": 0.85, "rules": 0.5, "rules, 2 workers": 0.5, "sink": 0.8, "sink, 2 workers": 0.8}
    if ratios:
        ax.bar([k for k, _ in ratios], [v for _, v in ratios], color="#4477aa")
        ax.scatter([k for k, _ in ratios], [goals[k] for k, _ in ratios], color="#cc3311", marker="_", s=900,
                   label="goal", zorder=3)
        ax.legend()
    ax.set_title("throughput through the product / baseline")
    ax = axes[0][1]
    if lat := results.get("latency"):
        stages = [*lat["stages_ms"].items(), ("capture->violation", lat["capture_to_violation_ms"]),
                  ("capture->row", lat["capture_to_row_ms"])]
        y = range(len(stages))
        for i, (q, colour) in enumerate((("p50", "#4477aa"), ("p95", "#ee7733"), ("p99", "#cc3311"))):
            ax.barh([v + i * 0.27 for v in y], [s[1][q] for s in stages], height=0.27, label=q, color=colour)
        ax.set_yticks([v + 0.27 for v in y], [s[0] for s in stages], fontsize=8)
        ax.set_xlabel("ms")
        ax.legend()
    ax.set_title("latency by stage")
    sc = results.get("scaling")
    ax = axes[1][0]
    if sc:
        n = [s["cameras"] for s in sc["steps"]]
        ax.plot(n, [s["offered_fps"] for s in sc["steps"]], "--", color="grey", label="offered frames/s")
        ax.plot(n, [s["detected_fps"] for s in sc["steps"]], "o-", color="#4477aa", label="detected frames/s")
        if kept := sc.get("kept_up_with_cameras"):
            ax.axvline(kept, color="#228833", linestyle=":", label=f"kept up with {kept} cameras")
        ax.set_xscale("log", base=2)
        ax.set_xticks(n, [str(c) for c in n])
        ax.set_xlabel(f"cameras at {sc['fps_per_camera']} fps")
        ax2 = ax.twinx()
        ax2.plot(n, [s["latency_ms"]["p95"] for s in sc["steps"]], "s-", color="#cc3311", label="p95 latency ms")
        ax2.set_ylabel("ms")
        ax.legend(loc="upper left")
        ax2.legend(loc="lower right")
    ax.set_title(f"scaling: {_workers(sc)}" if sc else "scaling")
    ax = axes[1][1]
    if sc:
        labels = [str(s["cameras"]) for s in sc["steps"]]
        ax.bar(labels, [s["rss_mb"] for s in sc["steps"]], color="#4477aa", label="RSS MiB")
        ax.set_xlabel("cameras")
        ax.set_ylabel("detector RSS MiB")
        if all("cpu_cores" in s for s in sc["steps"]):
            ax2 = ax.twinx()
            ax2.plot(labels, [s["cpu_cores"] for s in sc["steps"]], "o-", color="#ee7733", label="CPU cores")
            ax2.set_ylabel("detector CPU, cores")
            ax2.set_ylim(bottom=0)
            ax2.legend(loc="upper left")
    ax.set_title("memory and CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
