"""The local stack's ClickHouse 18.16 users, on the real server: what the read-only reader and the
insert-only sink user can and cannot do (exactly what 18.16 enforces with users.xml: readonly=1,
allow_ddl=0, allow_databases), and the sink worker writing as its user.

18.16 has no SQL access control, so two things are not possible there and are asserted as they are:
the sink user can SELECT from its own database (a current server with migration 006 grants it INSERT
only), and both users can read the system database."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from clickhouse_driver import Client
from clickhouse_driver.errors import ServerException

from aimass import contracts
from aimass.clickhouse.client import connect, parse_url, query_rows
from aimass.kafka import start_producer
from conftest import Namespace, Workers, wait_until

pytestmark = pytest.mark.integration

READONLY, DATABASE_ACCESS_DENIED, QUERY_IS_PROHIBITED, WRONG_PASSWORD = 164, 291, 392, 193


def _as(local_stack, kind: str) -> Client:
    env = local_stack.env()
    t = parse_url(local_stack.clickhouse_url)
    password = Path(env[f"AIMASS_CLICKHOUSE_{kind.upper()}_PASSWORD_FILE"]).read_text().strip()
    return Client(host=t.host, port=t.port, database="aimass", user=env[f"AIMASS_CLICKHOUSE_{kind.upper()}_USER"],
                  password=password, connect_timeout=5, send_receive_timeout=30)


def _refused(client: Client, sql: str, code: int, rows=None) -> None:
    with pytest.raises(ServerException) as err:
        client.execute(sql, rows) if rows is not None else client.execute(sql)
    assert err.value.code == code, f"{sql}: {err.value}"


@pytest.fixture
def other_db(local_stack):
    """A database beside aimass (another test's namespace would be one)."""
    ns = Namespace(local_stack)
    admin = connect(local_stack.clickhouse_url, database="default")
    admin.execute(f"CREATE DATABASE {ns.database}")
    admin.execute(f"CREATE TABLE {ns.database}.t (a UInt8) ENGINE = MergeTree() ORDER BY a")
    yield ns.database
    admin.execute(f"DROP DATABASE {ns.database}")
    admin.disconnect()


def test_the_stack_exports_names_and_password_files_not_passwords(local_stack):
    env = local_stack.env()
    assert (env["AIMASS_CLICKHOUSE_SINK_USER"], env["AIMASS_CLICKHOUSE_READER_USER"]) == ("aimass_sink", "aimass_reader")
    users_xml = (Path(local_stack.state_dir) / "clickhouse" / "users.xml").read_text()
    for kind in ("SINK", "READER"):
        f = Path(env[f"AIMASS_CLICKHOUSE_{kind}_PASSWORD_FILE"])
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        password = f.read_text().strip()
        assert len(password) >= 24 and password not in users_xml and password not in repr(env)
        assert __import__("hashlib").sha256(password.encode()).hexdigest() in users_xml


def test_reader_selects_and_cannot_write_or_leave_its_database(local_stack, other_db):
    reader = _as(local_stack, "reader")
    try:
        assert reader.execute("SELECT count() >= 0 FROM aimass.frames") == [(1,)]
        assert reader.execute("SELECT count() FROM system.tables WHERE database = 'aimass' AND name = 'frames'") == [(1,)]
        _refused(reader, "INSERT INTO aimass.sensor_readings (sensor_id, value) VALUES", READONLY, [("x", 1.0)])
        for sql in ("DROP TABLE aimass.frames", "TRUNCATE TABLE aimass.frames", "ALTER TABLE aimass.frames DELETE WHERE 1",
                    "CREATE TABLE aimass.x (a UInt8) ENGINE = Memory", "RENAME TABLE aimass.frames TO aimass.f2",
                    "OPTIMIZE TABLE aimass.frames", "CREATE DATABASE mine", "SET readonly = 0"):
            _refused(reader, sql, READONLY)
        _refused(reader, f"SELECT count() FROM {other_db}.t", DATABASE_ACCESS_DENIED)
    finally:
        reader.disconnect()
    wrong = Client(host=parse_url(local_stack.clickhouse_url).host, port=parse_url(local_stack.clickhouse_url).port,
                   user="aimass_reader", password="not-the-password", connect_timeout=5)
    _refused(wrong, "SELECT 1", WRONG_PASSWORD)


def test_sink_inserts_and_cannot_change_schema_or_leave_its_database(local_stack, other_db):
    sink = _as(local_stack, "sink")
    admin = connect(local_stack.clickhouse_url)
    try:
        sink.execute("INSERT INTO aimass.sensor_readings (date, captured, captured_ms, site_id, sensor_id, seq, value) VALUES",
                     [(__import__("datetime").date(2026, 1, 2), 1767312000, 1767312000000.0, "users-test", "users-test-s1", 1, 7.5)])
        assert admin.execute("SELECT value FROM aimass.sensor_readings WHERE sensor_id = 'users-test-s1'") == [(7.5,)]
        for sql in ("DROP TABLE aimass.frames", "TRUNCATE TABLE aimass.frames", "ALTER TABLE aimass.frames DELETE WHERE 1",
                    "CREATE TABLE aimass.x (a UInt8) ENGINE = Memory", "RENAME TABLE aimass.frames TO aimass.f2",
                    "DETACH TABLE aimass.frames", "OPTIMIZE TABLE aimass.frames", "CREATE DATABASE mine",
                    "SET allow_ddl = 1"):
            _refused(sink, sql, QUERY_IS_PROHIBITED)
        _refused(sink, f"SELECT count() FROM {other_db}.t", DATABASE_ACCESS_DENIED)
        _refused(sink, f"INSERT INTO {other_db}.t (a) VALUES", DATABASE_ACCESS_DENIED, [(1,)])
        # What 18.16 cannot forbid (a current server grants the sink INSERT only, migration 006):
        assert sink.execute("SELECT count() FROM aimass.sensor_readings WHERE sensor_id = 'users-test-s1'") == [(1,)]
        assert sink.execute("SELECT count() FROM system.tables WHERE database = 'aimass' AND name = 'frames'") == [(1,)]
    finally:
        admin.execute("ALTER TABLE aimass.sensor_readings DELETE WHERE site_id = 'users-test'")
        sink.disconnect()
        admin.disconnect()


def test_sink_worker_writes_as_the_insert_only_user(local_stack, tmp_path):
    """The sink worker with the stack's env (as `aimass run` after `eval "$(aimass stack env)"` and the
    demo run it): it connects as aimass_sink, and its inserts (materialized views included) land."""
    ns = Namespace(local_stack)
    env = {**local_stack.env(), "AIMASS_TOPIC_PREFIX": ns.topic_prefix}  # the stack's aimass database
    settings = ns.settings().model_copy(update={"clickhouse_url": local_stack.clickhouse_url})
    from aimass import stack
    stack.prepare(settings, migrate=False)
    workers = Workers(tmp_path, env)
    sensor = "users-" + ns.database
    try:
        workers.start("sink")

        async def send():
            p = await start_producer(settings)
            try:
                for seq in range(3):
                    msg = contracts.SensorReading(site_id="users-test", sensor_id=sensor, seq=seq,
                                                  captured_ms=contracts.now_ms(), value=20.0 + seq, unit="C")
                    await p.send_and_wait(settings.topic(contracts.TOPIC_SENSORS), contracts.encode(msg), key=sensor.encode())
            finally:
                await p.stop()
        asyncio.run(send())
        admin = connect(local_stack.clickhouse_url)
        try:
            wait_until(lambda: query_rows(admin, f"SELECT count() FROM sensor_readings FINAL WHERE sensor_id = '{sensor}'")[1][0][0] == 3,
                       30, "3 readings inserted by the sink user")
            assert "sink writes to ClickHouse as user aimass_sink" in (tmp_path / "sink.log").read_text()
        finally:
            admin.execute("ALTER TABLE aimass.sensor_readings DELETE WHERE site_id = 'users-test'")
            admin.disconnect()
    finally:
        workers.stop()
