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
    all = "all"


@app.command("run")
def run(worker: Worker = typer.Argument(Worker.all, help="which worker; `all` supervises one process each")) -> None:
    """Run the stream workers (Faust apps) until interrupted."""
    from aimass import runner
    _logging(Settings().log_level)
    if worker is Worker.all:
        raise typer.Exit(runner.run_all(runner.all_workers()))
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
) -> None:
    """Send a real camera's frames to Kafka."""
    from aimass.site import load_site
    from aimass_gateway.camera import run_camera
    from aimass_gateway.sources import SourceError
    settings = GatewaySettings()
    _logging(settings.log_level)
    site_id = site_id or load_site(settings.site_file).site.id
    try:
        asyncio.run(run_camera(settings, site_id, camera_id, source, fps=fps, width=width, seconds=seconds, loop=loop))
    except SourceError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


@gateway_app.command("simulate")
def gateway_simulate(
    site: Path = typer.Option(None, "--site", help="site YAML with scenes (default: the demo site)"),
    seconds: float = typer.Option(60.0, "--seconds", min=1),
    truth: Optional[Path] = typer.Option(None, "--truth", help="write the ground truth as JSON lines"),
) -> None:
    """Simulated cameras (real photos on scripted paths) and sensors."""
    from aimass.site import SiteFileError, load_site
    from aimass_gateway.simulate import simulate
    settings = GatewaySettings()
    _logging(settings.log_level)
    try:
        s = load_site(site or settings.site_file)
    except SiteFileError as exc:
        _fail(str(exc))
    gw = asyncio.run(simulate(s, settings, seconds, truth_file=truth))
    console.print(f"sent {gw.counters.frames} frames, {gw.counters.readings} readings, {gw.counters.send_errors} send errors")


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
@app.command("sql")
def sql(query: str = typer.Argument(..., help="the SQL to run against AIMASS_CLICKHOUSE_URL")) -> None:
    """Run a query against the configured ClickHouse and print a table."""
    from clickhouse_driver.errors import NetworkError, ServerException
    from aimass.clickhouse.client import connect, parse_url, query_rows
    settings = Settings()
    where = repr(parse_url(settings.clickhouse_url))
    try:
        client = connect(settings.clickhouse_url)
        columns, rows = query_rows(client, query)
    except ServerException as exc:
        # The server's own stack trace helps nobody at a terminal.
        _fail(f"ClickHouse refused the query (code {exc.code}): {exc.message.split('Stack trace:')[0].strip()}")
    except (NetworkError, OSError, EOFError) as exc:
        _fail(f"cannot reach ClickHouse at {where}: {exc}\nIs the stack up (`aimass stack status`) and "
              "AIMASS_CLICKHOUSE_URL set (`eval \"$(aimass stack env)\"`)?")
    print_table(columns, rows)


@app.command("demo")
def demo(duration: float = typer.Option(60.0, "--duration", min=5, help="seconds of simulated site"),
         state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="default: .aimass/demo")) -> None:
    """Start the local stack, run the demo site through the real detector and rules, report, stop."""
    from aimass.demo import run_demo
    raise typer.Exit(run_demo(duration, state_dir or Path(".aimass/demo"), console))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
