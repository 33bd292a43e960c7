"""Shared fixtures: the real broker and ClickHouse server for the whole test session (started on
free ports, stopped after), and workers run as real child processes."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from aimass import runner, stack

# Hypothesis, for the property tests (tests/unit/test_properties_*.py). The default profile "aimass"
# is deterministic (the same examples on every run for the same code, so a red test is reproducible
# and CI cannot flake), bounded in time (a fixed number of examples, no per-example deadline, which
# only flakes on a busy machine) and keeps no example database (hypothesis still caches constants
# under .hypothesis/, git-ignored). AIMASS_HYPOTHESIS=thorough searches much longer with fresh random
# examples, for a local bug hunt.
settings.register_profile(
    "aimass", derandomize=True, database=None, deadline=None, max_examples=100, print_blob=False,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", parent=settings.get_profile("aimass"), derandomize=False, max_examples=3000)
settings.load_profile(os.environ.get("AIMASS_HYPOTHESIS", "aimass"))


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory):
    state = tmp_path_factory.mktemp("stack")
    info = stack.up(state)
    try:
        yield info
    finally:
        stack.down(state)
        assert not stack.pid_alive(info.broker_pid), "the broker outlived the test session"
        assert not stack.pid_alive(info.clickhouse_pid), "ClickHouse outlived the test session"


def wait_until(predicate: Callable[[], object], deadline_s: float, what: str, interval_s: float = 0.2):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after the deadline."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what} (last value: {last!r})")


async def read_topic(ns, topic: str, timeout_s: float = 2.0) -> list:
    """Everything on ``topic`` so far (all partitions, from the start), as aiokafka ConsumerRecords: read
    until a fetch comes back empty after some arrived, or ``timeout_s``."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(ns.topic_prefix + topic, bootstrap_servers=ns.env["AIMASS_KAFKA_BOOTSTRAP"],
                         auto_offset_reset="earliest", group_id=None)
    await c.start()
    out = []
    try:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            got = await c.getmany(timeout_ms=300)
            if not got and out:
                break
            for records in got.values():
                out.extend(records)
    finally:
        await c.stop()
    return out


class Namespace:
    """One test's own topics (a topic prefix) and ClickHouse database on the session's servers, so
    tests neither see each other's messages nor rows."""

    def __init__(self, info):
        tag = "t" + uuid.uuid4().hex[:10]
        self.topic_prefix = f"{tag}."
        self.database = tag
        self.clickhouse_url = info.clickhouse_url.rsplit("/", 1)[0] + "/" + tag
        self.env = {"AIMASS_KAFKA_BOOTSTRAP": info.kafka_bootstrap, "AIMASS_CLICKHOUSE_URL": self.clickhouse_url,
                    "AIMASS_TOPIC_PREFIX": self.topic_prefix}

    def settings(self, cls=None, **kw):
        from aimass.settings import Settings
        cls = cls or Settings
        return cls(kafka_bootstrap=self.env["AIMASS_KAFKA_BOOTSTRAP"], clickhouse_url=self.clickhouse_url,
                   topic_prefix=self.topic_prefix, **kw)


@pytest.fixture
def ns(local_stack):
    """A fresh namespace with its topics created and its database migrated."""
    n = Namespace(local_stack)
    stack.prepare(n.settings())
    return n


@pytest.fixture
def ns_ch(ns):
    from aimass.clickhouse.client import connect
    client = connect(ns.clickhouse_url)
    yield client
    client.disconnect()


class Workers:
    """Start workers as child processes (`aimass run NAME`) in a test's namespace, wait for their
    readiness markers, stop them after the test."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp = tmp
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, *names: str, deadline_s: float = 120.0) -> None:
        ready = self.tmp / "ready"
        for n in names:
            (ready / n).unlink(missing_ok=True)
        env = {**self.env, "AIMASS_READY_DIR": str(ready)}
        for n in names:
            self.procs[n] = runner.spawn(n, self.tmp / f"{n}.log", env)
        try:
            runner.wait_ready(ready, names, [self.procs[n] for n in names], deadline_s)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}\n{self.logs(*names)}") from None

    def stop(self, *names: str) -> None:
        names = names or tuple(self.procs)
        runner.stop([self.procs.pop(n) for n in names if n in self.procs])

    def kill(self, *names: str) -> None:
        """SIGKILL: no commit, no flush, as a power cut or the OOM killer would leave it."""
        for n in names:
            p = self.procs.pop(n)
            p.kill()
            p.wait(30)

    def logs(self, *names: str) -> str:
        out = []
        for n in names or self.procs:
            f = self.tmp / f"{n}.log"
            if f.exists():
                out.append(f"--- {n}.log (tail) ---\n" + f.read_text(errors="replace")[-3000:])
        return "\n".join(out)


@pytest.fixture
def workers(ns, tmp_path, request):
    """Per-test workers in the test's namespace. A test that needs other settings passes them
    through ``@pytest.mark.worker_env(KEY=VALUE, ...)``."""
    marker = request.node.get_closest_marker("worker_env")
    env = {**ns.env, **(dict(marker.kwargs) if marker else {})}
    w = Workers(tmp_path, env)
    yield w
    w.stop()
