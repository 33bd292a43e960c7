"""Starting the workers: one Faust worker per process (`aimass run detector`), or supervised child
processes (`aimass run all`; `aimass run rules` with several processes), so each gets its own GIL.
Processes of one worker share its consumer group, and so its partitions."""

from __future__ import annotations

import ctypes
import gc
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from aimass import settings as S
from aimass import metrics, telemetry
from aimass.batch_consumer import assignment
from aimass.processes import usable_cores

WORKERS = {
    "detector": ("aimass_detector.worker", S.DetectorSettings),
    "rules": ("aimass_rules.worker", S.RulesSettings),
    "sink": ("aimass_sink.worker", S.SinkSettings),
    "registry": ("aimass_registry.worker", S.RegistrySettings),
    "bench-noop": ("aimass.bench.noop", S.RulesSettings),  # the plumbing's ceiling, for `aimass bench`
}
# `aimass run all` starts these; the registry joins them where its HTTP API has a token (it refuses to
# start without one), and the demo runs only these.
STREAM_WORKERS = ("detector", "rules", "sink")

log = logging.getLogger("aimass.runner")


def all_workers() -> list[str]:
    """What `aimass run all` starts: the stream workers, and the registry when a token is configured."""
    registry = S.RegistrySettings()
    configured = bool(registry.registry_token.get_secret_value() or registry.registry_token_file)
    return [*STREAM_WORKERS, *(["registry"] if configured else [])]


def run_worker(name: str) -> None:
    """Run one worker in this process until SIGTERM/SIGINT."""
    import faust

    from aimass.clickhouse.users import UsersError
    from aimass.kafka import KafkaSecurityError
    from aimass.site import SiteFileError
    from aimass_detector.model import ModelError
    from aimass_registry.api import RegistryConfigError

    module, settings_cls = WORKERS[name]
    settings = settings_cls()
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)  # Faust makes its folder there, not its parents
    telemetry.setup(f"aimass-{name}")
    metrics.setup(f"aimass-{name}", settings.metrics_port)
    try:
        app = importlib.import_module(module).build_app(settings)
    except (SiteFileError, ModelError, RegistryConfigError, KafkaSecurityError, UsersError) as exc:
        # A bad site file, model folder, registry, Kafka security or database user set-up is the operator's
        # to fix: say so once, without a Faust crash log.
        log.error("%s worker cannot start: %s", name, exc)
        raise SystemExit(2) from None
    metrics.watch_lag(app)
    _announce_ready(app, name)
    app.finalize()
    settle_collector()

    class Worker(faust.Worker):
        async def on_stop(self) -> None:  # the first step of stopping, whatever asked for it
            _exit_after(name, settings.stop_timeout_s)
            await super().on_stop()

    worker = Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


# Young objects allowed (allocations less deallocations) before the collector runs. A sink batch holds
# ~15 tracked objects a message (2000 messages, two batches' rows in flight) that refcounting frees when
# the batch is done; at the default 700 the collector walked them ~20 times a batch: 1.3-2.0 µs of a
# message's 16-20 µs of CPU (gc callbacks on drains). At this bound a drain runs no collection at all;
# cyclic garbage waits at most this many objects (a few MiB) to be freed.
YOUNG_OBJECTS_BEFORE_COLLECTION = 100_000


def settle_collector() -> None:
    """Set the garbage collector for a long-lived worker, once start-up is done: what start-up made
    (modules, the app, the site, the model) is moved out of the collector's sight, since it lives as
    long as the worker yet every full collection walked it again (~10 % of the sink's CPU on a drain,
    0.21 of 2.1 s; frozen: 0.01 s, rows/s x1.13-1.36 in four alternating pairs); and the young
    generation may grow to ``YOUNG_OBJECTS_BEFORE_COLLECTION``, so a batch's own objects, freed by
    refcounting, do not set collections off."""
    gc.collect()  # what is already garbage is freed, not frozen
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS_BEFORE_COLLECTION, middle, old)


EXIT_STOP_TIMEOUT = 3


def _exit_after(name: str, seconds: float) -> None:
    """Exit the process if stopping takes longer than ``seconds``. A stop commits offsets, flushes the
    producer and lets the sink's last inserts finish; a broker or ClickHouse that stopped answering
    holds those for ever (seen with a stalled broker: a sink still there 120 s after SIGTERM). Exiting
    then is safe: what the worker had not committed is read again by the next worker of its group."""
    def expire() -> None:
        log.error("%s worker did not stop within %.0f s (AIMASS_STOP_TIMEOUT_S) of being asked to: a broker or "
                  "ClickHouse that does not answer holds its last commit or insert. Exiting now; its uncommitted "
                  "input will be read again by the next %s worker", name, seconds, name)
        logging.shutdown()  # flush the log line before the hard exit
        os._exit(EXIT_STOP_TIMEOUT)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True  # a process that stops in time exits without waiting for it
    timer.start()


def _announce_ready(app, name: str) -> None:
    """Touch ``$AIMASS_READY_DIR/NAME`` once the worker has partitions and its own start-up is done
    (the detector's model is loaded), so the demo and the tests wait on a condition, not a sleep."""
    ready_dir = os.environ.get("AIMASS_READY_DIR")
    if not ready_dir:
        return
    marker = Path(ready_dir) / name
    is_ready = getattr(app, "aimass_ready", lambda: True)

    @app.timer(0.2)
    async def announce() -> None:
        if not marker.exists() and assignment(app) and is_ready():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            log.info("worker %s ready", name)


def wait_ready(ready_dir: Path, names, procs: list[subprocess.Popen], deadline_s: float = 120.0) -> None:
    """Wait until every named worker announced readiness; fail early when one of them exits."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if all((Path(ready_dir) / n).exists() for n in names):
            return
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"a worker exited during start-up (code {dead[0].returncode}); see its log")
        time.sleep(0.1)
    missing = [n for n in names if not (Path(ready_dir) / n).exists()]
    raise RuntimeError(f"workers not ready after {deadline_s:.0f} s: {', '.join(missing)}; see their logs")


def spawn(name: str, log_file: Path | None = None, env: dict[str, str] | None = None,
          die_with_parent: bool = False) -> subprocess.Popen:
    """Start one process of worker NAME (``aimass run NAME --processes 1``: whatever its processes
    setting says, the caller supervises) as a child process, its output to ``log_file`` when given.
    ``die_with_parent``: the child gets SIGTERM when the calling thread's process dies (Linux; call it
    from the main thread: the kernel ties the signal to the thread that forked)."""
    out = open(log_file, "ab") if log_file else None
    try:
        return subprocess.Popen([sys.executable, "-m", "aimass.cli", "run", name, "--processes", "1"],
                                stdout=out, stderr=subprocess.STDOUT if out else None,
                                stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                preexec_fn=_terminate_with(os.getpid()) if die_with_parent else None)
    finally:
        if out:
            out.close()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _terminate_with(parent: int):
    """A preexec_fn: SIGTERM this child when ``parent`` dies, so a supervisor killed outright (SIGKILL,
    the OOM killer) leaves no worker behind. A no-op where there is no prctl (not Linux)."""
    def arrange() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # it died before the prctl took effect
            os._exit(1)
    return arrange


def stop(procs: list[subprocess.Popen], timeout_s: float = 15.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def processes_of(name: str, requested: int | None = None) -> int:
    """How many processes ``aimass run NAME`` starts: ``requested`` (its --processes), else its
    ``NAME_processes`` setting (rules, sink), else one (the detector's sessions share the cores out
    within one process); 0 means one per usable core."""
    n = getattr(WORKERS[name][1](), f"{name}_processes", 1) if requested is None else requested
    return n or usable_cores()


def expand(names: list[str]) -> list[str]:
    """One entry per process: each worker named as many times as ``processes_of`` says."""
    return [n for name in names for n in [name] * processes_of(name)]


# A child that exits is started again after a back-off that doubles while it keeps failing (a bad site
# file or model folder exits with code 2 at every start until someone fixes it, and is then picked up
# without a restart by hand), and starts over once it had run this long.
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
RESTART_RESET_S = 60.0


def run_all(names: list[str]) -> int:
    """Supervise one child per entry of ``names`` (a worker named twice runs as two processes of its
    consumer group); a child that dies is restarted after a back-off (``RESTART_*``). Returns when this
    process gets SIGTERM/SIGINT, after stopping the children, back-off or not; killed outright, its
    children get SIGTERM.

    Child ``i`` gets metrics and web ports ``base + i``, and under ``$AIMASS_READY_DIR`` a folder of its
    own; this process touches ``$AIMASS_READY_DIR/NAME`` once every process of NAME is ready, so a
    caller waits for all of them, not for the first."""
    base_port = S.Settings().metrics_port
    base_web = S.Settings().worker_web_port
    ready_dir = Path(os.environ["AIMASS_READY_DIR"]) if os.environ.get("AIMASS_READY_DIR") else None

    def own_ready(i: int) -> Path:
        return ready_dir / ".processes" / str(i)

    def child(i: int) -> subprocess.Popen:
        # Each child its own ports: the same one twice would fail the second worker's start.
        env = {"AIMASS_METRICS_PORT": str(base_port + i)} if base_port else {}
        if base_web:
            env["AIMASS_WORKER_WEB_PORT"] = str(base_web + i)
        if ready_dir:
            env["AIMASS_READY_DIR"] = str(own_ready(i))
        return spawn(names[i], env=env, die_with_parent=True)

    for name in sorted(set(names)):
        count = names.count(name)
        if count > 1:
            log.info("%s: %d processes in one consumer group", name, count)
    procs = [child(i) for i in range(len(names))]
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    backoff = [RESTART_FIRST_S] * len(names)
    started = [time.monotonic()] * len(names)
    restart_at: dict[int, float] = {}  # child index -> when it starts again
    unannounced = set(names) if ready_dir else set()
    while not stopping:
        time.sleep(0.2)
        for name in list(unannounced):
            if all((own_ready(i) / name).exists() for i, n in enumerate(names) if n == name):
                (ready_dir / name).touch()
                unannounced.discard(name)
        now = time.monotonic()
        for i, p in enumerate(procs):
            if i in restart_at:
                if now >= restart_at[i] and not stopping:
                    del restart_at[i]
                    procs[i], started[i] = child(i), now
            elif p.poll() is not None:
                # Waited out here, not slept: a stop or another child's exit is seen within one tick.
                if now - started[i] >= RESTART_RESET_S:
                    backoff[i] = RESTART_FIRST_S  # it had run a while: a fresh failure, not a crash loop
                log.error("worker %s exited with code %s; restarting in %.0f s", names[i], p.returncode, backoff[i])
                restart_at[i] = now + backoff[i]
                backoff[i] = min(backoff[i] * 2, RESTART_MAX_S)
    stop(procs)
    return 0
