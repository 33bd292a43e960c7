"""`aimass`: the one command for everything a person does with AI Mass.

Every command reads its servers from the environment (`AIMASS_KAFKA_BOOTSTRAP`,
`AIMASS_CLICKHOUSE_URL`, ...; see aimass.settings). `eval "$(aimass stack env)"` sets them for the
local stack.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from aimass.settings import GatewaySettings, Settings
from aimass_registry.cli import models_app

app = typer.Typer(help="AI Mass: smart-security video and IoT analytics.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
stack_app = typer.Typer(help="The local broker and ClickHouse server.", no_args_is_help=True)
gateway_app = typer.Typer(help="Send camera frames and sensor readings to Kafka.", no_args_is_help=True)
rules_app = typer.Typer(help="Site files: cameras, zones, sensors and rules.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(gateway_app, name="gateway")
app.add_typer(rules_app, name="rules")
app.add_typer(models_app, name="models")
console = Console(soft_wrap=True)  # messages hold commands and paths: never break them
err = Console(stderr=True, soft_wrap=True)


def _logging(level: str = "info") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def print_table(columns: list[str], rows: list[tuple], title: str | None = None) -> None:
    if not rows:
        console.print(f"[bold]{title}[/bold]: none" if title else "(no rows)")
        return
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    console.print(t)


# ---------------------------------------------------------------- stack
StateDir = typer.Option(None, "--state-dir", help="where the stack keeps ports, pids and data (default: $AIMASS_STATE_DIR or .aimass)")


def _state_dir(state_dir: Optional[Path]) -> Path:
    return state_dir or Settings().state_dir


@stack_app.command("up")
def stack_up(state_dir: Optional[Path] = StateDir) -> None:
    """Start the broker and ClickHouse on free loopback ports, create topics, apply migrations."""
    from aimass import stack
    try:
        info = stack.up(_state_dir(state_dir))
    except Exception as exc:
        _fail(str(exc))
    console.print(f"broker     {info.kafka_bootstrap} (pid {info.broker_pid})\n"
                  f"clickhouse {info.clickhouse_url} (pid {info.clickhouse_pid}, HTTP port {info.clickhouse_http_port})\n"
                  f"state      {info.state_dir}\n\nNext: eval \"$(aimass stack env --state-dir {info.state_dir})\"")


@stack_app.command("down")
def stack_down(state_dir: Optional[Path] = StateDir) -> None:
    """Stop the local stack started by `stack up`."""
    from aimass import stack
    if not stack.down(_state_dir(state_dir)):
        console.print("no stack is recorded in that state dir; nothing to stop")


@stack_app.command("status")
def stack_status(state_dir: Optional[Path] = StateDir) -> None:
    """Show whether the local stack's processes are running."""
    from aimass import stack
    info = stack.read_state(_state_dir(state_dir))
    if info is None:
        console.print("down (no stack recorded; start one with `aimass stack up`)")
        raise typer.Exit(3)
    rows = [("broker", info.kafka_bootstrap, info.broker_pid, "up" if stack.pid_alive(info.broker_pid) else "DOWN"),
            ("clickhouse", info.clickhouse_url, info.clickhouse_pid, "up" if stack.pid_alive(info.clickhouse_pid) else "DOWN")]
    print_table(["server", "address", "pid", "state"], rows)
    if any(r[3] != "up" for r in rows):
        raise typer.Exit(3)


@stack_app.command("env")
def stack_env(state_dir: Optional[Path] = StateDir) -> None:
    """Print `export` lines for the local stack: eval "$(aimass stack env)"."""
    from aimass import stack
    info = stack.read_state(_state_dir(state_dir))
    if info is None:
        _fail("no local stack is running in that state dir; start one with `aimass stack up`")
    for k, v in info.env().items():
        print(f"export {k}={v}")


@stack_app.command("init")
def stack_init() -> None:
    """Create the topics and apply the ClickHouse migrations on the configured (real) servers."""
    from aimass import stack
    try:
        stack.prepare(Settings())
    except Exception as exc:
        _fail(f"could not prepare the servers: {exc}")
    console.print("topics created and migrations applied")


# ---------------------------------------------------------------- workers
class Worker(str, Enum):
    detector = "detector"
    rules = "rules"
    sink = "sink"
    registry = "registry"
    bench_noop = "bench-noop"  # counts messages and nothing else: the plumbing's ceiling (aimass bench)
    all = "all"


@app.command("run")
def run(worker: Worker = typer.Argument(Worker.all, help="which worker; `all` supervises each as its own processes"),
        processes: Optional[int] = typer.Option(
            None, "--processes", min=0, max=64, help="processes of this worker in its consumer group (0: one per "
            "usable core); default: AIMASS_RULES_PROCESSES / AIMASS_SINK_PROCESSES, 1 for the others")) -> None:
    """Run the stream workers (Faust apps) until interrupted."""
    from aimass import runner
    _logging(Settings().log_level)
    if worker is Worker.all:
        if processes is not None:
            _fail("--processes is per worker; for `run all` set AIMASS_RULES_PROCESSES and AIMASS_SINK_PROCESSES")
        raise typer.Exit(runner.run_all(runner.expand(runner.all_workers())))
    count = runner.processes_of(worker.value, processes)
    if count > 1 and worker is Worker.registry:
        _fail("the registry serves one HTTP API (AIMASS_REGISTRY_PORT); run it as one process, without --processes")
    if count > 1:
        raise typer.Exit(runner.run_all([worker.value] * count))
    runner.run_worker(worker.value)


# ---------------------------------------------------------------- gateway
@gateway_app.command("camera")
def gateway_camera(
    camera_id: str = typer.Option(..., "--camera-id", help="the camera's id in the site file"),
    source: str = typer.Option(..., "--source", help="video file, image folder, rtsp:// or http:// URL, or webcam number"),
    fps: float = typer.Option(5.0, "--fps", min=0.1, max=60),
    width: Optional[int] = typer.Option(None, "--width", help="resize to this width (keeps the aspect ratio)"),
    site_id: Optional[str] = typer.Option(None, "--site-id", help="default: the site file's id"),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="stop after this long"),
    loop: bool = typer.Option(False, "--loop", help="loop a file or folder (testing)"),
    gate: bool = typer.Option(False, "--gate", help="send a frame only when the scene changed, plus keep-alives"),
    keepalive: float = typer.Option(10.0, "--keepalive", min=0.1, help="with --gate: a still scene sends a frame this often"),
    quality: Optional[int] = typer.Option(None, "--quality", min=10, max=100, help="JPEG quality (default: AIMASS_JPEG_QUALITY)"),
) -> None:
    """Send a real camera's frames to Kafka (one camera; `gateway run` runs many from a file)."""
    # Faust, imported with the Kafka plumbing, takes `--loop VALUE` in sys.argv as the name of its event
    # loop when it is imported; here --loop is our flag, and typer has read the arguments already.
    sys.argv[1:] = [a for a in sys.argv[1:] if a != "--loop"]
    from aimass.site import load_site
    from aimass_gateway.camera import run_camera
    from aimass_gateway.config import Gating
    from aimass_gateway.sources import SourceError
    from aimass_gateway.spool import SpoolError
    settings = GatewaySettings()
    _logging(settings.log_level)
    site_id = site_id or load_site(settings.site_file).site.id
    try:
        gw = asyncio.run(run_camera(settings, site_id, camera_id, source, fps=fps, width=width, seconds=seconds,
                                    loop=loop, gating=Gating(keepalive_s=keepalive) if gate else None,
                                    jpeg_quality=quality))
    except (SourceError, SpoolError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        return
    c = gw.counters
    console.print(f"sent {c.frames} frames ({c.frame_bytes} bytes), skipped {c.frames_skipped}, "
                  f"spooled {c.spooled} ({gw.spool_messages} still waiting), {c.send_errors} send errors")


@gateway_app.command("run")
def gateway_run(
    config: Path = typer.Option(..., "--config", help="the gateway file: cameras and sensors (see services/gateway/gateways/)"),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="stop after this long (default: until interrupted)"),
    quiet: bool = typer.Option(False, "--quiet", help="no live status table (logs only)"),
) -> None:
    """Run a whole gateway from one file: many cameras, sensors (MQTT, HTTP push, simulated),
    heartbeats, store and forward. Shows a live table per camera."""
    from rich.live import Live
    from aimass.site import SiteFileError
    from aimass_gateway.config import GatewayConfigError, load_gateway_file
    from aimass_gateway.fleet import Gateway
    from aimass_gateway.sources import SourceError
    from aimass_gateway.spool import SpoolError
    settings = GatewaySettings()
    _logging(settings.log_level)
    try:
        gateway = Gateway(settings, load_gateway_file(config))
    except (GatewayConfigError, SiteFileError, ValueError) as exc:
        _fail(str(exc))
    live = None if quiet else Live(console=console, refresh_per_second=2, transient=False)

    def tick(g: Gateway) -> None:
        if live is not None:
            live.update(_gateway_table(g.status()))
    try:
        if live is not None:
            live.start()
        asyncio.run(gateway.run(seconds, on_tick=tick))
    except (SourceError, SpoolError, ValueError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()


def _gateway_table(st: dict) -> Table:
    import time as _time
    now = _time.time() * 1000
    spool = (f"spool {st['spool_messages']} msgs / {st['spool_bytes'] / 1e6:.1f} MB, dropped {st['spool_dropped']}"
             + (" [yellow](broker unreachable: storing)[/yellow]" if st["spooling"] else ""))
    clock = ("clock not measured" if st["clock_offset_ms"] is None
             else f"clock {st['clock_offset_ms']:+.1f} ms ({st['clock_source']})")
    t = Table(title=f"gateway {st['gateway_id']} (site {st['site_id']}), up {st['uptime_s']:.0f} s — {spool}; "
                    f"readings {st['readings_sent']} sent, {st['readings_refused']} refused; {clock}",
              title_justify="left", header_style="bold")
    for c in ("camera", "state", "fps", "sent", "skipped", "MB sent", "last frame", "reconnects", "errors"):
        t.add_column(c)
    up = max(st["uptime_s"], 1e-3)
    for c in st["cameras"]:
        age = "never" if not c["last_frame_ms"] else f"{(now - c['last_frame_ms']) / 1000:.1f} s ago"
        t.add_row(c["camera_id"], c["state"], f"{c['frames_sent'] / up:.1f}", str(c["frames_sent"]),
                  str(c["frames_skipped"]), f"{c['bytes_sent'] / 1e6:.2f}", age, str(c["reconnects"]),
                  str(c["errors"]) + (f" ({c['last_error'][:40]})" if c["last_error"] else ""))
    return t


@gateway_app.command("silent")
def gateway_silent(after: float = typer.Option(60.0, "--after", min=1, help="seconds without a frame")) -> None:
    """Cameras that went silent: no frame (or no heartbeat from their gateway) for --after seconds."""
    from clickhouse_driver.errors import NetworkError, ServerException
    from aimass import reports
    from aimass.clickhouse.client import connect, query_rows
    try:
        client = connect(Settings().clickhouse_url)
        columns, rows = query_rows(client, reports.silent_cameras(after))
    except (ServerException, NetworkError, OSError, EOFError) as exc:
        _fail(f"cannot query ClickHouse: {exc}")
    print_table(columns, rows, title=f"cameras silent for {after:g} s or more")
    if rows:
        raise typer.Exit(3)


@gateway_app.command("bandwidth")
def gateway_bandwidth(
    site: Path = typer.Option(None, "--site", help="site YAML with scenes (default: the demo site)"),
    seconds: float = typer.Option(60.0, "--seconds", min=1, help="scene time per camera"),
    keepalive: float = typer.Option(10.0, "--keepalive", min=0.1),
    quality: int = typer.Option(80, "--quality", min=10, max=100),
) -> None:
    """What the motion gate saves on a site's scripted scenes: bytes per camera-hour with and without it."""
    from aimass.site import SiteFileError, load_site
    from aimass_gateway.bandwidth import measure
    from aimass_gateway.gating import GateConfig
    try:
        s = load_site(site or GatewaySettings().site_file)
    except SiteFileError as exc:
        _fail(str(exc))
    with console.status("rendering the scenes …"):
        rows = measure(s, seconds, GateConfig(keepalive_s=keepalive), quality)
    out = [(r.camera_id, r.frames, r.frames_sent, f"{r.per_hour(r.bytes_all) / 1e6:.1f}",
            f"{r.per_hour(r.bytes_sent) / 1e6:.1f}", f"{100 * r.saving:.0f} %",
            ", ".join(f"{k} {v}" for k, v in sorted(r.reasons.items()))) for r in rows]
    all_b, sent_b = sum(r.bytes_all for r in rows), sum(r.bytes_sent for r in rows)
    out.append(("all", sum(r.frames for r in rows), sum(r.frames_sent for r in rows),
                f"{all_b * 3600 / seconds / 1e6:.1f}", f"{sent_b * 3600 / seconds / 1e6:.1f}",
                f"{100 * (1 - sent_b / all_b) if all_b else 0:.0f} %", ""))
    print_table(["camera", "frames", "sent (gated)", "MB/h ungated", "MB/h gated", "saving", "why sent"], out,
                title=f"{seconds:g} s of scene per camera, JPEG quality {quality}, keep-alive {keepalive:g} s")


@gateway_app.command("simulate")
def gateway_simulate(
    site: Path = typer.Option(None, "--site", help="site YAML with scenes (default: the demo site)"),
    seconds: float = typer.Option(60.0, "--seconds", min=1),
    truth: Optional[Path] = typer.Option(None, "--truth", help="write the ground truth as JSON lines"),
    gate: bool = typer.Option(False, "--gate", help="each camera sends only when its scene changed, plus keep-alives"),
    keepalive: float = typer.Option(10.0, "--keepalive", min=0.1, help="with --gate: a still scene sends a frame this often"),
) -> None:
    """Simulated cameras (real photos on scripted paths) and sensors."""
    from aimass.site import SiteFileError, load_site
    from aimass_gateway.gating import GateConfig
    from aimass_gateway.simulate import simulate
    settings = GatewaySettings()
    _logging(settings.log_level)
    try:
        s = load_site(site or settings.site_file)
    except SiteFileError as exc:
        _fail(str(exc))
    gw = asyncio.run(simulate(s, settings, seconds, truth_file=truth,
                              gate=GateConfig(keepalive_s=keepalive) if gate else None))
    c = gw.counters
    console.print(f"sent {c.frames} frames ({c.frame_bytes} bytes), skipped {c.frames_skipped}, {c.readings} readings, "
                  f"{c.send_errors} send errors, {gw.spool_messages} messages waiting in the spool")


# ---------------------------------------------------------------- rules
@rules_app.command("validate")
def rules_validate(file: Path = typer.Argument(..., help="the site YAML")) -> None:
    """Check a site file offline."""
    from aimass.site import SiteFileError, load_site
    try:
        s = load_site(file)
    except SiteFileError as exc:
        _fail(str(exc))
    console.print(f"{file}: valid — site {s.site.id}, {len(s.cameras)} cameras, {len(s.sensors)} sensors, {len(s.rules)} rules")
    _print_spread(s, Settings())


def _print_spread(site, settings: Settings) -> None:
    """How the site's cameras and sensors fall on the partitions of the topics keyed by them: workers
    share a topic by partition, so a partition holding more than an even share loads one worker more."""
    from aimass.kafka import even_counts, even_share, keys_by_partition

    cameras, sensors = [c.id for c in site.cameras], [x.id for x in site.sensors]
    for what, keys, count, setting, workers in (
            ("cameras", cameras, settings.partitions_frames, "AIMASS_PARTITIONS_FRAMES", "detector"),
            ("cameras", cameras, settings.partitions_detections, "AIMASS_PARTITIONS_DETECTIONS", "rules"),
            ("sensors", sensors, settings.partitions_sensors, "AIMASS_PARTITIONS_SENSORS", "rules")):
        if not keys:
            continue
        topic = setting.removeprefix("AIMASS_PARTITIONS_").lower()
        parts = keys_by_partition(keys, count)
        console.print(f"{what} over the {topic} topic's {count} partitions: "
                      + " · ".join(f"{p}: {', '.join(k) or '-'}" for p, k in enumerate(parts)), highlight=False)
        share, most = even_share(len(keys), count), max(map(len, parts))
        if most > share:
            even = even_counts(keys, count + 1)[:5]
            console.print(f"  [yellow]uneven:[/yellow] a partition holds {most} of the {len(keys)} {what} where an "
                          f"even share is {share}, so {workers} workers that split these partitions can get unequal loads "
                          f"(the partition is a hash of the id). "
                          + (f"Even at {', '.join(map(str, even))} partitions: set {setting} before the topics are "
                             "created (`aimass stack init`)." if even else ""), highlight=False)


@rules_app.command("apply")
def rules_apply(file: Path = typer.Argument(..., help="the site YAML")) -> None:
    """Validate a site file and publish it: running rules workers switch to it without a restart,
    keeping the state of unchanged rules. A bad file is refused and nothing changes."""
    from aimass.site import SiteFileError
    from aimass_rules.control import publish
    try:
        msg = asyncio.run(publish(Settings(), file))
    except SiteFileError as exc:
        _fail(f"{exc}\nNothing was published; the running rules are unchanged.")
    console.print(f"published {file} for site {msg.site_id} (sha256 {msg.sha256[:12]}); running rules workers "
                  "switch to it as they read the control topic")


@rules_app.command("eval")
def rules_eval(
    scenarios: Optional[Path] = typer.Option(None, "--scenarios", help="scenario file (default: the built-in suite)"),
    model_dir: Optional[Path] = typer.Option(None, "--model", help="model folder (default: AIMASS_MODEL_DIR)"),
    floor: float = typer.Option(0.95, "--floor", help="least precision and recall per rule type for exit code 0"),
) -> None:
    """Measure the rules' precision and recall on scripted scenarios through the real detector."""
    from aimass.settings import DetectorSettings
    from aimass_rules.evaluation import SCENARIOS, evaluate
    with console.status("running the scenarios through the detector and the rules …"):
        outcomes, scores = evaluate(model_dir or DetectorSettings().model_dir, scenarios or SCENARIOS)
    misses = [(o.scenario, o.rule_id, o.fp, o.fn, ", ".join(f"{s:.1f}" for s in o.starts_s))
              for o in outcomes if o.fp or o.fn]
    if misses:
        print_table(["scenario", "rule", "false +", "missed", "incident starts (s)"], misses, title="Misses")
    rows = [(t, int(s["tp"]), int(s["fp"]), int(s["fn"]), f"{s['precision']:.3f}", f"{s['recall']:.3f}")
            for t, s in sorted(scores.items())]
    print_table(["rule type", "true +", "false +", "missed", "precision", "recall"], rows,
                title=f"{len({o.scenario for o in outcomes})} scenarios")
    bad = [t for t, s in scores.items() if s["precision"] < floor or s["recall"] < floor]
    if bad:
        _fail(f"below the floor of {floor}: {', '.join(sorted(bad))}")


# ---------------------------------------------------------------- sql, demo
class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def _clickhouse_call(settings: Settings, fn):
    """Run ``fn(client)`` against the configured ClickHouse; a refusal or an unreachable server
    ends the command with one line that says what to do."""
    from clickhouse_driver.errors import NetworkError, ServerException
    from aimass.clickhouse.client import connect, parse_url
    where = repr(parse_url(settings.clickhouse_url))
    client = None
    try:
        client = connect(settings.clickhouse_url)
        return fn(client)
    except ServerException as exc:
        # The server's own stack trace helps nobody at a terminal.
        _fail(f"ClickHouse refused the query (code {exc.code}): {exc.message.split('Stack trace:')[0].strip()}")
    except (NetworkError, OSError, EOFError) as exc:
        _fail(f"cannot reach ClickHouse at {where}: {exc}\nIs the stack up (`aimass stack status`) and "
              "AIMASS_CLICKHOUSE_URL set (`eval \"$(aimass stack env)\"`)?")
    finally:
        if client is not None:
            client.disconnect()


@app.command("sql")
def sql(
    query: str = typer.Argument(..., help="the SQL to run against AIMASS_CLICKHOUSE_URL ('-' reads it from stdin)"),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f",
                                     help="table (the terminal), csv (with a header), json (JSON Lines: one object "
                                          "per row) or parquet (typed from the ClickHouse columns; needs --output)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write to this file instead of the terminal"),
) -> None:
    """Run a query against the configured ClickHouse; print a table or write CSV, JSON Lines or Parquet."""
    from aimass.clickhouse import export
    if query == "-":
        query = sys.stdin.read()
    if fmt is OutputFormat.parquet and output is None:
        _fail("Parquet is binary: name a file with --output FILE (e.g. --output result.parquet)", code=2)

    def run_query(client):
        rows, types = client.execute(query, with_column_types=True)
        return [n for n, _ in types], [t for _, t in types], rows

    columns, types, rows = _clickhouse_call(Settings(), run_query)
    if fmt is OutputFormat.table:
        if output is None:
            print_table(columns, rows)
        else:
            with open(output, "w", encoding="utf-8") as f:
                Console(file=f, width=max(80, 16 * len(columns)), soft_wrap=True, color_system=None).print(
                    _table(columns, rows))
            err.print(f"{len(rows)} rows written to {output}", highlight=False)
        return
    if output is None:
        export.write(fmt.value, sys.stdout, columns, types, rows)
        sys.stdout.flush()
        return
    mode = "wb" if fmt is OutputFormat.parquet else "w"
    with open(output, mode, **({} if mode == "wb" else {"encoding": "utf-8", "newline": ""})) as f:
        n = export.write(fmt.value, f, columns, types, rows)
    err.print(f"{n} rows written to {output} ({fmt.value})", highlight=False)


def _table(columns: list[str], rows: list[tuple]) -> Table:
    t = Table(header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    return t


@app.command("retention")
def retention(
    dry_run: bool = typer.Option(False, "--dry-run", help="list the partitions that would be dropped; drop nothing"),
    ttl: bool = typer.Option(False, "--ttl", help="also set each table's TTL to the AIMASS_RETENTION_* days "
                             "(ClickHouse 20.1 and later; run once after changing a retention setting)"),
) -> None:
    """Drop the ClickHouse partitions older than each table's retention (AIMASS_RETENTION_*_DAYS).
    Run it daily (cron, a Kubernetes CronJob): ClickHouse 18.16 has no TTL, and on a current server it
    applies retention settings that differ from the TTLs the migrations set."""
    from aimass.clickhouse.client import database_of, server_version
    from aimass.clickhouse.retention import apply_retention, apply_ttl
    settings = Settings()
    database = database_of(settings.clickhouse_url)

    def run_retention(client):
        version = server_version(client)
        changed = apply_ttl(client.execute, database, settings, version, dry_run=dry_run) if ttl else []
        return changed, apply_retention(client.execute, database, settings, dry_run=dry_run)

    ttls, dropped = _clickhouse_call(settings, run_retention)
    if ttl:
        print_table(["table", "ttl"], ttls, title="TTL " + ("to set" if dry_run else "set"))
    print_table(["table", "partition", "last day", "rows", "bytes"],
                [(d.table, d.partition, d.last_day.isoformat(), d.rows, d.bytes) for d in dropped],
                title="Partitions " + ("to drop" if dry_run else "dropped"))


@app.command("demo")
def demo(duration: float = typer.Option(60.0, "--duration", min=5, help="seconds of simulated site"),
         state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="default: .aimass/demo")) -> None:
    """Start the local stack, run the demo site through the real detector and rules, report, stop."""
    from aimass.demo import run_demo
    raise typer.Exit(run_demo(duration, state_dir or Path(".aimass/demo"), console))


@app.command("bench")
def bench(
    only: str = typer.Option(",".join(("detector", "rules", "sink", "latency", "scaling")), "--only",
                             help="comma-separated sections: detector, rules, sink, latency, scaling"),
    providers: str = typer.Option("", "--providers", help="ONNX Runtime providers, e.g. cuda or tensorrt,cuda; "
                                  "empty: the best available"),
    threads: int = typer.Option(0, "--threads", min=0, help="intra-op threads per session; 0: the worker's auto "
                                "layout (the cores shared among its sessions)"),
    sessions: int = typer.Option(0, "--sessions", min=0, max=16, help="ONNX Runtime sessions in the detector; 0: "
                                 "auto (one per core on the CPU, 1 on a GPU)"),
    max_batch: int = typer.Option(4, "--max-batch", min=1, max=256, help="frames per inference batch"),
    detector_workers: int = typer.Option(1, "--detector-workers", min=1, max=16, help="detector processes (one "
                                         "group) in the detector and scaling sections: on a GPU, to keep it busy"),
    quick: bool = typer.Option(False, "--quick", help="small workloads: checks the bench runs, figures not reportable"),
    out: Path = typer.Option(Path("bench/results"), "--out", help="where bench.json and bench.png go"),
) -> None:
    """Measure what the stream around the model costs: detector, rules and sink throughput against bare
    baselines, latency per stage at half capacity, scaling with cameras (on a local stack of its own)."""
    from aimass.bench import report
    from aimass.bench.run import BenchOptions, run_bench
    from aimass.site import SiteFileError, load_site

    _logging("warning")
    try:
        site = load_site(Settings().site_file)
        results = run_bench(site, BenchOptions(only=tuple(s.strip() for s in only.split(",") if s.strip()),
                                               providers=providers, threads=threads, sessions=sessions,
                                               max_batch=max_batch, detector_workers=detector_workers,
                                               quick=quick),
                            say=lambda m: console.print(f"[dim]{m}[/dim]"))
    except (ValueError, SiteFileError, RuntimeError) as exc:
        _fail(str(exc))
    report.print_tables(results, console)
    for path in report.write(results, out):
        console.print(f"wrote {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
