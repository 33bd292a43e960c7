"""The database users' SQL for ClickHouse >= 20.5 (migration 006 and aimass.clickhouse.users) and
their users.xml entries for 18.16.

chdb (a current ClickHouse in-process) has no writable user directory: CREATE ROLE / CREATE USER cannot
run there (asserted below), so the SQL is checked with that engine's own parser (formatQuery) and the
statements ensure_users sends are checked against a recording executor. What the users can do on a real
server is tested on 18.16 in tests/integration/test_clickhouse_users_server.py."""

from __future__ import annotations

import hashlib
import logging
import xml.etree.ElementTree as ET

import pytest
from pydantic import ValidationError

from aimass.clickhouse.migrate import discover, migrate
from aimass.clickhouse.users import (DbUser, UsersError, configured, configured_users, ensure_users,
                                     has_sql_access_control, user_statements, users_xml)
from aimass.settings import Settings, SinkSettings
from chdb_engine import Chdb

pytest.importorskip("chdb.session")

PASSWORD = "Reader-Pa55word-not-for-logs"
SINK_PASSWORD = "Sink-Pa55word-not-for-logs"


@pytest.fixture(scope="module")
def chdb_exec(tmp_path_factory):
    engine = Chdb(tmp_path_factory.mktemp("chdb-users"))
    yield engine.execute
    engine.close()


def _literal(sql: str) -> str:
    return "'" + sql.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _users() -> list[DbUser]:
    return [DbUser("sink", "aimass_sink", SINK_PASSWORD), DbUser("reader", "aimass_reader", PASSWORD)]


def test_access_migration_and_user_sql_parse_on_a_current_clickhouse(chdb_exec):
    m006 = next(m for m in discover() if m.version == 6)
    assert m006.requires == (20, 5) and m006.requires_access_control
    sql = m006.statements("aimass")
    for u in _users():
        sql += user_statements(u, "aimass", ["frames", "detections"])
    for stmt in sql:
        formatted = chdb_exec(f"SELECT formatQuery({_literal(stmt)})")[0][0]  # raises on a syntax error
        assert formatted.replace("`", "").split()[:3] == stmt.replace("`", "").split()[:3]
    assert "GRANT INSERT ON aimass.* TO aimass_sink_role" in sql
    assert "GRANT SELECT ON aimass.* TO aimass_reader_role" in sql
    assert any("SETTINGS readonly = 1 TO aimass_reader_role" in s for s in sql)


def test_chdb_keeps_no_sql_users_so_006_waits_unrecorded(chdb_exec):
    assert has_sql_access_control(chdb_exec) is False
    with pytest.raises(Exception, match="CREATE ROLE"):  # what 006 would meet there
        chdb_exec("CREATE ROLE IF NOT EXISTS aimass_probe_role")
    done = migrate(chdb_exec, "usersdb", (26, 9))
    assert 6 not in [m.version for m in done] and 1 in [m.version for m in done]
    assert chdb_exec("SELECT count() FROM usersdb.schema_migrations WHERE version = 6") == [(0,)]


def test_statements_carry_the_hash_never_the_password():
    sink, reader = _users()
    sql = user_statements(sink, "aimass", ["frames", "detections"])
    digest = hashlib.sha256(SINK_PASSWORD.encode()).hexdigest()
    assert sql == [
        f"CREATE USER IF NOT EXISTS `aimass_sink` IDENTIFIED WITH sha256_hash BY '{digest}'",
        f"ALTER USER `aimass_sink` IDENTIFIED WITH sha256_hash BY '{digest}'",
        "GRANT `aimass_sink_role` TO `aimass_sink`",
        "ALTER USER `aimass_sink` DEFAULT ROLE `aimass_sink_role`",
        "GRANT SELECT ON aimass.`frames` TO `aimass_sink_role`",  # tables that feed materialized views
        "GRANT SELECT ON aimass.`detections` TO `aimass_sink_role`",
    ]
    reader_sql = user_statements(reader, "aimass", ["frames"], (20, 8))
    assert reader_sql[-1] == "ALTER USER `aimass_reader` DEFAULT ROLE `aimass_reader_role` " \
                             "SETTINGS PROFILE 'aimass_reader_profile'"
    # From 22.9 Grafana's plugin may still set its query timeout under readonly=1:
    assert user_statements(reader, "aimass", [], (24, 8))[-1].endswith(
        "SETTINGS PROFILE 'aimass_reader_profile', max_execution_time MIN 1 MAX 600 CHANGEABLE_IN_READONLY")
    assert not any("SELECT ON" in s for s in reader_sql)  # its SELECT is the role's, on the whole database
    assert not any(SINK_PASSWORD in s or PASSWORD in s for s in sql + reader_sql)
    assert SINK_PASSWORD not in repr(sink)


@pytest.mark.parametrize("name", ["a-b", "x; DROP TABLE t", "1st", "`q`", ""])
def test_user_names_cannot_inject(name):
    with pytest.raises(UsersError, match="letters, digits and underscores"):
        DbUser("sink", name, "pw")
    with pytest.raises(ValidationError, match="clickhouse_sink_user"):
        Settings(clickhouse_sink_user=name)


class Recorder:
    def __init__(self, *, storages=1, roles=("aimass_sink_role", "aimass_reader_role"), fail_on=None):
        self.sql: list[str] = []
        self.storages, self.roles, self.fail_on = storages, roles, fail_on

    def __call__(self, sql: str) -> list[tuple]:
        self.sql.append(sql)
        if "system.user_directories" in sql:
            return [(self.storages,)]
        if "system.roles" in sql:
            return [(r,) for r in self.roles]
        if "system.tables" in sql:
            assert "database = 'aimass'" in sql and "dependencies_table" in sql
            return [("frames",), ("sensor_readings",)]
        if self.fail_on and self.fail_on in sql:
            raise RuntimeError(f"Code: 497. DB::Exception: Not enough privileges (query: {sql})")
        return []


def test_ensure_users_on_a_current_server(caplog):
    caplog.set_level(logging.DEBUG)
    rec = Recorder()
    assert ensure_users(rec, "aimass", (24, 8, 1), _users()) == ["aimass_sink", "aimass_reader"]
    changes = [s for s in rec.sql if not s.startswith("SELECT")]
    assert changes == user_statements(_users()[0], "aimass", ["frames", "sensor_readings"], (24, 8, 1)) + \
        user_statements(_users()[1], "aimass", ["frames", "sensor_readings"], (24, 8, 1))
    assert changes[-1].endswith("CHANGEABLE_IN_READONLY")
    digests = [hashlib.sha256(p.encode()).hexdigest() for p in (SINK_PASSWORD, PASSWORD)]
    for secret in (SINK_PASSWORD, PASSWORD, *digests):
        assert secret not in caplog.text
    assert "aimass_sink" in caplog.text  # it does say what it did


def test_ensure_users_elsewhere():
    rec = Recorder()
    assert ensure_users(rec, "aimass", (18, 16, 1), _users()) == [] and rec.sql == []  # users.xml there
    rec = Recorder(storages=0)
    assert ensure_users(rec, "aimass", (26, 9), _users()) == []
    assert not any(s.startswith(("CREATE", "ALTER", "GRANT")) for s in rec.sql)
    with pytest.raises(UsersError, match="migration 006 has not been applied"):
        ensure_users(Recorder(roles=()), "aimass", (26, 9), _users())
    assert ensure_users(Recorder(), "aimass", (26, 9), []) == []


def test_a_failing_statement_is_reported_without_the_hash():
    digest = hashlib.sha256(SINK_PASSWORD.encode()).hexdigest()
    with pytest.raises(UsersError) as err:
        ensure_users(Recorder(fail_on="CREATE USER"), "aimass", (26, 9), _users())
    assert "could not set up ClickHouse user aimass_sink" in str(err.value) and "Not enough privileges" in str(err.value)
    assert digest not in str(err.value) and "[hidden]" in str(err.value)


def test_users_come_from_settings_with_passwords_from_env_or_files(tmp_path, monkeypatch):
    for k in ("SINK", "READER"):
        for suffix in ("USER", "PASSWORD", "PASSWORD_FILE"):
            monkeypatch.delenv(f"AIMASS_CLICKHOUSE_{k}_{suffix}", raising=False)
    assert configured_users(Settings()) == []  # no password: neither created nor used
    f = tmp_path / "reader.pw"
    f.write_text(PASSWORD + "\n")
    monkeypatch.setenv("AIMASS_CLICKHOUSE_READER_PASSWORD_FILE", str(f))
    monkeypatch.setenv("AIMASS_CLICKHOUSE_SINK_USER", "site7_sink")
    monkeypatch.setenv("AIMASS_CLICKHOUSE_SINK_PASSWORD", SINK_PASSWORD)
    s = SinkSettings()
    users = configured_users(s)
    assert [(u.kind, u.name, u.password) for u in users] == [("sink", "site7_sink", SINK_PASSWORD),
                                                              ("reader", "aimass_reader", PASSWORD)]
    assert SINK_PASSWORD not in repr(s) and SINK_PASSWORD not in repr(users)
    f.unlink()
    with pytest.raises(UsersError, match="clickhouse_reader_password_file .* cannot be read"):
        configured(s, "reader")
    with pytest.raises(ValidationError, match="both clickhouse_sink_password and clickhouse_sink_password_file"):
        SinkSettings(clickhouse_sink_password_file=tmp_path / "x")


def test_users_xml_for_18_16():
    digest = hashlib.sha256(b"pw").hexdigest()
    profiles, users = users_xml([("sink", "aimass_sink", digest), ("reader", "aimass_reader", digest)], ["aimass"])
    root = ET.fromstring(f"<yandex><profiles>{profiles}</profiles><users>{users}</users></yandex>")
    assert root.findtext("profiles/aimass_reader/readonly") == "1"
    assert root.findtext("profiles/aimass_sink/allow_ddl") == "0"
    for name, profile in (("aimass_sink", "aimass_sink"), ("aimass_reader", "aimass_reader")):
        u = root.find(f"users/{name}")
        assert u.findtext("password_sha256_hex") == digest and u.find("password") is None
        assert u.findtext("profile") == profile
        assert [d.text for d in u.findall("allow_databases/database")] == ["aimass"]
    with pytest.raises(UsersError):
        users_xml([("sink", "x</name><admin>", digest)], ["aimass"])
