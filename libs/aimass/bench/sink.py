"""Sink throughput: rows/s from the detections topic into ClickHouse through the sink worker (decode,
row mapping, batched inserts, offsets committed after them), divided by raw clickhouse-driver batch
inserts of the same rows, built beforehand, in batches of the sink's size. Both in the same run, in
alternating pairs: the server's speed moves within seconds on a shared host (three runs of one pair
minutes apart: 0.53, 0.69, 1.19), so the median pair is reported, with the range. Each pair also drains
with two sink processes of one group (``sink_processes``): how far the sink scales by processes against
the same raw inserts. Beside the rates, the CPU a row of the client (the sink's process over the window
its rate is read in, or the raw inserts' own process time) and of the ClickHouse server over the same
spans: on a host where both share the cores, the two together say what bounds the ratio."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aimass import contracts
from aimass.bench import probe, workload
from aimass.bench.fleet import Fleet
from aimass.clickhouse.client import connect, insert
from aimass.clickhouse.schema import COLUMNS
from aimass.contracts import Detections
from aimass.processes import descendants
from aimass.settings import SinkSettings


@dataclass
class SinkOptions:
    per_camera: int = 15000
    cameras: int = 4
    objects: int = 3
    pairs: int = 3  # sink drains, each between two raw inserts; the median pair's ratio is reported


@dataclass
class RawInsert:
    rows: int
    seconds: float
    cpu_s: float  # the client's (this process's)
    server_cpu_s: float  # the ClickHouse server's, over the same span


def raw_insert(url: str, messages: list[tuple[bytes, bytes]], batch_messages: int, server_pids: list[int]) -> RawInsert:
    """clickhouse-driver inserting the sink's rows of ``messages`` in batches of ``batch_messages``
    messages, table by table as the sink does; rows built before the clock starts. ``server_pids``: the
    ClickHouse server's processes, whose CPU is read over the inserts."""
    from aimass_sink import rows as R

    decoded = [contracts.decode(v, Detections) for _, v in messages]
    batches = []
    for i in range(0, len(decoded), batch_messages):
        part = decoded[i:i + batch_messages]
        batches.append((("frames", [R.frame_row(d, 0.0) for d in part]),
                        ("detections", [r for d in part for r in R.detection_rows(d)])))
    client = connect(url)
    try:
        with probe.CpuUse(*server_pids) as server:
            t, cpu = time.perf_counter(), time.process_time()
            for tables in batches:
                for table, rows in tables:
                    insert(client, table, COLUMNS[table], rows)
            seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    finally:
        client.disconnect()
    return RawInsert(sum(len(rows) for tables in batches for _, rows in tables), seconds, cpu, server.seconds)


def run(fleet: Fleet, opts: SinkOptions) -> dict:
    site = fleet.site
    # One camera per detections partition, so each of two processes gets an even share.
    cams = workload.cameras(site, opts.cameras, spread=SinkSettings().partitions_detections)
    messages = workload.detection_messages([c.id for c in cams], opts.per_camera, opts.objects, site_id=site.site.id)
    spaces = [(fleet.namespace("sink", site=site.model_copy(update={"cameras": cams})),
               fleet.namespace("sink_two", site=site.model_copy(update={"cameras": cams}))) for _ in range(opts.pairs)]
    settings = spaces[0][0].settings(SinkSettings)
    for one, _ in spaces:
        asyncio.run(workload.produce(one.settings(), contracts.TOPIC_DETECTIONS, messages, traced=True))

    server_pids = [fleet.info.clickhouse_pid, *descendants(fleet.info.clickhouse_pid)]  # it may run below runuser

    def raw() -> RawInsert:
        # Tables of its own each time: replacing merges see only its rows, and no earlier run's parts.
        return raw_insert(fleet.namespace("sink_raw").clickhouse_url, messages, settings.batch_rows, server_pids)

    last = raw()
    rows = last.rows
    pairs, rss = [], 0.0
    for one, two in spaces:
        w = one.start("sink")
        cpu, server = probe.CpuSamples([w.proc.pid]), probe.CpuSamples(server_pids)
        # Sampled often: the counter moves a whole batch (batch_rows messages, 4 rows each) at a time.
        written = server.reading(cpu.reading(lambda: probe.counter(w.metrics_port, "aimass_sink_rows")))
        rate = probe.steady_rate(written, rows, 300, interval_s=0.05, alive=w.alive)
        rss = max(rss, probe.rss_mb(w.proc.pid))
        one.stop()
        workers = two.start_together("sink", 2)  # on empty topics: both are in the group before the backlog
        with two.held(workers):
            asyncio.run(workload.produce(two.settings(), contracts.TOPIC_DETECTIONS, messages, traced=True))
        both, _ = probe.combined_rate([lambda w=w: probe.counter(w.metrics_port, "aimass_sink_rows") for w in workers],
                                      rows, 300, interval_s=0.05, alive=lambda: all(w.alive() for w in workers))
        two.stop()
        after = raw()
        raw_rate = rows / ((last.seconds + after.seconds) / 2)  # the raw inserts either side of these drains
        pairs.append({"sink_rows_per_s": round(rate.per_s), "raw_rows_per_s": round(raw_rate),
                      "ratio": round(rate.per_s / raw_rate, 3), "two_workers_rows_per_s": round(both.per_s),
                      "two_workers_ratio": round(both.per_s / raw_rate, 3),
                      "sink_cpu_us_per_row": round(cpu.per_unit(rows) * 1e6, 2),
                      "sink_server_cpu_us_per_row": round(server.per_unit(rows) * 1e6, 2),
                      "raw_cpu_us_per_row": round((last.cpu_s + after.cpu_s) / 2 / rows * 1e6, 2),
                      "raw_server_cpu_us_per_row": round((last.server_cpu_s + after.server_cpu_s) / 2 / rows * 1e6, 2)})
        last = after
    median, ratio_range = probe.median_round(pairs, "ratio")
    two_median, two_range = probe.median_round(pairs, "two_workers_ratio")
    return {"messages": len(messages), "rows": rows, "batch_messages": settings.batch_rows,
            "insert_batches": settings.insert_batches, **median, "pairs": pairs,
            "ratio_range": ratio_range, "worker_rss_mb": round(rss, 1), "goal": 0.8,
            "two_workers_rows_per_s": two_median["two_workers_rows_per_s"],
            "two_workers_ratio": two_median["two_workers_ratio"],
            "two_over_one": round(two_median["two_workers_rows_per_s"] / two_median["sink_rows_per_s"], 3),
            "two_workers_ratio_range": two_range}
