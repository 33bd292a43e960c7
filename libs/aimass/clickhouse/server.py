"""A private ClickHouse server for the local stack and the tests: its own config, ports and data
folder under a state dir, so it never touches a system-wide installation.

The binary is, in order: the ``binary`` argument, ``$AIMASS_CLICKHOUSE_BIN``, ``clickhouse-server``
on PATH, ``clickhouse`` on PATH (run as ``clickhouse server``). As root the server is run as the
``clickhouse`` user (Debian's package creates it): ClickHouse refuses to run as root when its data
folder belongs to another user, and should not run as root anyway.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from aimass.processes import free_port, stop_pid

INSTALL_HINT = ("install Debian's clickhouse-server (`apt-get install -y clickhouse-server`, which `make` does "
                "when you are root) or set AIMASS_CLICKHOUSE_BIN to a clickhouse binary")


class ServerError(RuntimeError):
    pass


def find_binary(binary: str | None = None) -> list[str]:
    """The command that starts a server (before its arguments)."""
    explicit = binary or os.environ.get("AIMASS_CLICKHOUSE_BIN")
    if explicit:
        path = shutil.which(explicit) or explicit
        if not os.access(path, os.X_OK):
            raise ServerError(f"ClickHouse binary {explicit!r} is not an executable file; {INSTALL_HINT}")
        return [path] if Path(path).name == "clickhouse-server" else [path, "server"]
    if shutil.which("clickhouse-server"):
        return [shutil.which("clickhouse-server")]
    if shutil.which("clickhouse"):
        return [shutil.which("clickhouse"), "server"]
    raise ServerError(f"no ClickHouse server binary found; {INSTALL_HINT}")


CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{d}/log/clickhouse-server.log</log>
        <errorlog>{d}/log/clickhouse-server.err.log</errorlog>
        <size>50M</size>
        <count>2</count>
    </logger>
    <listen_host>{host}</listen_host>
    <tcp_port>{tcp}</tcp_port>
    <http_port>{http}</http_port>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <max_connections>256</max_connections>
    <max_concurrent_queries>50</max_concurrent_queries>
    <!-- small caches: the local stack shares a 2-core machine with the workers -->
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_server_memory_usage_to_ram_ratio>0.5</max_server_memory_usage_to_ram_ratio>
</yandex>
"""

USERS = """<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <max_threads>2</max_threads>
        </default>{profiles}
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>{users}
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
"""


# The local server's insert-only sink user and read-only reader user (aimass.clickhouse.users), limited
# to these databases. Their passwords are random, made once per state dir, kept in SECRETS_DIR (0600) for
# the clients (`aimass stack env` exports the file names); users.xml gets only their SHA-256.
LOCAL_DATABASES = ("aimass",)
SECRETS_DIR = "secrets"


def local_users(state_dir: Path, create: bool = True) -> list[tuple[str, str, Path]]:
    """(kind, user name, password file) of the local server in ``state_dir``; makes the password files
    the first time (``create``; else lists only those that exist). Names are the settings' defaults
    (clickhouse_sink_user, clickhouse_reader_user)."""
    import secrets

    from aimass.settings import Settings

    folder = Path(state_dir) / SECRETS_DIR
    if create:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = []
    for kind in ("sink", "reader"):
        name = Settings.model_fields[f"clickhouse_{kind}_user"].default
        f = folder / f"{name}.password"
        if not f.exists():
            if not create:
                continue
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out_file:
                out_file.write(secrets.token_urlsafe(24))
        out.append((kind, name, f))
    return out


def _users_config(state_dir: Path) -> str:
    import hashlib

    from aimass.clickhouse.users import users_xml

    users = [(kind, name, hashlib.sha256(f.read_text().strip().encode()).hexdigest())
             for kind, name, f in local_users(state_dir)]
    profiles, entries = users_xml(users, list(LOCAL_DATABASES))
    return USERS.format(profiles=profiles, users=entries)


@dataclass
class ServerHandle:
    host: str
    tcp_port: int
    http_port: int
    pid: int
    state_dir: Path
    database: str = "aimass"

    @property
    def url(self) -> str:
        return f"clickhouse://{self.host}:{self.tcp_port}/{self.database}"

    def stop(self, timeout_s: float = 15.0) -> None:
        stop_pid(self.pid, timeout_s)  # the runuser wrapper forwards SIGTERM to the server


def _run_as_clickhouse_user(state_dir: Path) -> list[str]:
    """``runuser`` prefix when we are root; chowns the state dir to the clickhouse user."""
    if os.geteuid() != 0:
        return []
    try:
        pw = pwd.getpwnam("clickhouse")
    except KeyError:
        raise ServerError("running as root, but there is no 'clickhouse' user to run the server as; "
                          "create one (`useradd --system clickhouse`) or run as a normal user") from None
    for root, dirs, files in os.walk(state_dir):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, pw.pw_uid, pw.pw_gid)
    # The state dir's parents must be traversable by that user.
    p = state_dir.parent
    while p != p.parent:
        mode = p.stat().st_mode
        if not mode & 0o001:
            p.chmod(mode | 0o001)
        p = p.parent
    return ["runuser", "-u", "clickhouse", "--"]


def _log_tail(state_dir: Path) -> str:
    parts = []
    for name in ("log/clickhouse-server.err.log", "stderr.log"):
        f = state_dir / name
        if f.exists():
            parts.append(f"--- {f} ---\n" + f.read_text(errors="replace")[-2000:])
    return "\n".join(parts)


def start_server(state_dir: Path, *, binary: str | None = None, host: str = "127.0.0.1",
                 deadline_s: float = 60.0, ports: tuple[int, int] | None = None) -> ServerHandle:
    """Start a server with its data under ``state_dir`` on free ports (or on ``ports``, (tcp, http):
    a restart keeps its address); returns once it answers."""
    from clickhouse_driver import Client

    cmd = find_binary(binary)
    state_dir = Path(state_dir).resolve()
    for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
    tcp, http = ports or (free_port(host), free_port(host))
    (state_dir / "config.xml").write_text(CONFIG.format(d=state_dir, host=host, tcp=tcp, http=http))
    (state_dir / "users.xml").write_text(_users_config(state_dir))
    prefix = _run_as_clickhouse_user(state_dir)
    with open(state_dir / "stderr.log", "ab") as err:
        proc = subprocess.Popen([*prefix, *cmd, f"--config-file={state_dir / 'config.xml'}"],
                                stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=state_dir, start_new_session=True)
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise ServerError(f"ClickHouse exited during start-up with code {proc.returncode} "
                              f"({' '.join(cmd)}):\n{_log_tail(state_dir)}")
        try:
            # A plain connect first: the driver logs a traceback for every refused connection.
            socket.create_connection((host, tcp), timeout=1).close()
            client = Client(host=host, port=tcp, connect_timeout=1, send_receive_timeout=5)
            client.execute("SELECT 1")
            client.disconnect()
            return ServerHandle(host=host, tcp_port=tcp, http_port=http, pid=proc.pid, state_dir=state_dir)
        except Exception as exc:  # not listening yet
            last = exc
            time.sleep(0.1)
    stop_pid(proc.pid)
    raise ServerError(f"ClickHouse did not answer on {host}:{tcp} within {deadline_s:.0f} s ({last}):\n"
                      f"{_log_tail(state_dir)}")
