"""The bench's servers and workers: one local stack for the whole run, a namespace (topic prefix and
ClickHouse database) per section so sections never read each other's messages, and worker processes
started with their Prometheus endpoint on a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from aimass import runner, stack
from aimass.processes import free_port
from aimass.settings import Settings
from aimass.site import Site


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen
    metrics_port: int
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Namespace:
    """One section's topics and database on the run's stack, and the workers it started."""

    info: stack.StackInfo
    folder: Path
    tag: str
    site_file: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)

    @property
    def clickhouse_url(self) -> str:
        """This namespace's database; "" when the run started no ClickHouse."""
        base = self.info.clickhouse_url
        return base.rsplit("/", 1)[0] + "/" + self.tag if base else ""

    @property
    def env(self) -> dict[str, str]:
        database = {"AIMASS_CLICKHOUSE_URL": self.clickhouse_url} if self.clickhouse_url else {}
        return {"AIMASS_KAFKA_BOOTSTRAP": self.info.kafka_bootstrap, **database,
                "AIMASS_TOPIC_PREFIX": f"{self.tag}.", "AIMASS_SITE_FILE": str(self.site_file),
                "AIMASS_STATE_DIR": str(self.folder / "state"),
                "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", **self.extra_env}

    def settings(self, cls: type[Settings] = Settings, **kw) -> Settings:
        database = {"clickhouse_url": self.clickhouse_url} if self.clickhouse_url else {}
        return cls(kafka_bootstrap=self.info.kafka_bootstrap, topic_prefix=f"{self.tag}.",
                   site_file=self.site_file, **database, **kw)

    def start(self, kind: str, env: dict[str, str] | None = None, wait_s: float = 120.0) -> Worker:
        """Start ``aimass run KIND`` and wait until it has its partitions."""
        return self.start_together(kind, 1, env, wait_s)[0]

    def start_together(self, kind: str, count: int, env: dict[str, str] | None = None,
                       wait_s: float = 120.0) -> list[Worker]:
        """Start ``count`` workers of ``aimass run KIND`` at once (one consumer group) and wait until each
        has partitions: started one after another, the first would read a backlog alone meanwhile."""
        started = []
        for _ in range(count):
            port = free_port()
            name = f"{kind}-{len(self.workers) + 1}"
            log = self.folder / f"{name}.log"
            ready = self.folder / "ready" / name  # each its own: a second worker is ready when it has partitions
            proc = runner.spawn(kind, log, {**self.env, "AIMASS_METRICS_PORT": str(port),
                                            "AIMASS_READY_DIR": str(ready), "AIMASS_WORKER_WEB_PORT": str(free_port()),
                                            **(env or {})})
            started.append(Worker(name, proc, port, log))
            self.workers.append(started[-1])
        procs = [w.proc for w in started]  # any of them exiting fails the wait
        for w in started:
            runner.wait_ready(self.folder / "ready" / w.name, [kind], procs, wait_s)
        return started

    def stop(self) -> None:
        runner.stop([w.proc for w in self.workers])
        self.workers.clear()

    @contextlib.contextmanager
    def held(self, workers: list[Worker]):
        """``workers`` stopped (SIGSTOP) inside the block and continued after it: a backlog produced
        meanwhile reaches a group whose members all joined already. Started on a backlog, the first
        worker to get partitions reads alone until the others have joined (a quick run's whole backlog,
        once). Keep the block well under the session timeout (heartbeats stop with the process)."""
        for w in workers:
            os.kill(w.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for w in workers:
                os.kill(w.proc.pid, signal.SIGCONT)


class Fleet:
    """The local stack of one bench run (its own state folder, torn down at the end). ``clickhouse=False``:
    the broker alone, for sections that store nothing (a GPU host running the detector's bench has no
    ClickHouse)."""

    def __init__(self, folder: Path, site: Site, clickhouse: bool = True):
        self.folder = folder
        self.site = site
        self.clickhouse = clickhouse
        self.info: stack.StackInfo | None = None
        self._spaces: list[Namespace] = []

    def __enter__(self) -> "Fleet":
        self.info = stack.up(self.folder / "stack", migrate=False, topics=False, clickhouse=self.clickhouse)
        return self

    def __exit__(self, *exc) -> None:
        for ns in self._spaces:
            ns.stop()
        stack.down(self.folder / "stack")

    def namespace(self, name: str, site: Site | None = None, **extra_env: str) -> Namespace:
        """Fresh topics and a migrated database for one section; ``site`` replaces the run's site."""
        tag = f"bench_{name}_{uuid.uuid4().hex[:6]}"
        folder = self.folder / name
        folder.mkdir(parents=True, exist_ok=True)
        site_file = folder / "site.yaml"
        site_file.write_text(yaml.safe_dump((site or self.site).model_dump(mode="json", exclude_none=True),
                                            sort_keys=False))
        ns = Namespace(self.info, folder, tag, site_file, dict(extra_env))
        stack.prepare(ns.settings(), migrate=self.clickhouse)
        self._spaces.append(ns)
        return ns
