"""`aimass sql`'s writers: CSV, JSON Lines and Parquet from a result (names, ClickHouse types, rows)."""

import csv
import datetime as dt
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from aimass.cli import app
from aimass.clickhouse import export

COLUMNS = ["camera_id", "frames", "first", "day", "score", "labels", "note", "event"]
TYPES = ["String", "UInt64", "DateTime", "Date", "Nullable(Float32)", "Array(String)", "Nullable(String)",
         "Enum8('start' = 1, 'update' = 2, 'end' = 3)"]
ROWS = [
    ("cam-gate", 149, dt.datetime(2026, 11, 23, 22, 6, 29), dt.date(2026, 11, 23), 0.5, ["person", "vehicle"],
     'says "hi", then, goes', "start"),
    ("cam-lobby", 2**63 + 5, dt.datetime(2026, 11, 23, 22, 6, 30), dt.date(2026, 11, 23), None, [], None, "end"),
]


def test_csv_has_a_header_iso_times_json_arrays_and_empty_nulls():
    text = export.render_csv(COLUMNS, ROWS)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == COLUMNS
    assert rows[1] == ["cam-gate", "149", "2026-11-23 22:06:29", "2026-11-23", "0.5", '["person", "vehicle"]',
                       'says "hi", then, goes', "start"]
    assert rows[2][1] == str(2**63 + 5) and rows[2][4] == "" and rows[2][5] == "[]" and rows[2][6] == ""
    assert len(rows) == 3


def test_json_lines_are_one_object_per_row():
    buf = io.StringIO()
    assert export.write_json_lines(buf, COLUMNS, ROWS) == 2
    objs = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert objs[0] == {"camera_id": "cam-gate", "frames": 149, "first": "2026-11-23 22:06:29", "day": "2026-11-23",
                       "score": 0.5, "labels": ["person", "vehicle"], "note": 'says "hi", then, goes', "event": "start"}
    assert objs[1]["score"] is None and objs[1]["note"] is None and objs[1]["frames"] == 2**63 + 5


def test_json_turns_nan_into_null():
    buf = io.StringIO()
    export.write_json_lines(buf, ["x"], [(float("nan"),)])
    assert json.loads(buf.getvalue()) == {"x": None}


def test_parquet_is_typed_from_the_clickhouse_columns(tmp_path):
    f = tmp_path / "r.parquet"
    assert export.write_parquet(f, COLUMNS, TYPES, ROWS) == 2
    t = pq.read_table(f)
    types = {name: t.schema.field(name).type for name in COLUMNS}
    assert types["camera_id"] == pa.string() and types["frames"] == pa.uint64()
    assert pa.types.is_timestamp(types["first"]) and types["first"].tz == "UTC"
    assert types["day"] == pa.date32() and types["score"] == pa.float32()
    assert types["labels"] == pa.list_(pa.string()) and types["event"] == pa.string()
    assert t.column("frames").to_pylist() == [149, 2**63 + 5]
    assert t.column("first").to_pylist()[0] == dt.datetime(2026, 11, 23, 22, 6, 29, tzinfo=dt.timezone.utc)
    assert t.column("score").to_pylist() == [0.5, None] and t.column("labels").to_pylist()[1] == []


def test_an_empty_result_is_still_a_typed_parquet_file(tmp_path):
    f = tmp_path / "empty.parquet"
    assert export.write_parquet(f, COLUMNS, TYPES, []) == 0
    t = pq.read_table(f)
    assert t.num_rows == 0 and t.schema.names == COLUMNS and t.schema.field("frames").type == pa.uint64()


@pytest.mark.parametrize("ch_type, arrow", [
    ("Nullable(Int32)", pa.int32()), ("LowCardinality(String)", pa.string()), ("UInt8", pa.uint8()),
    ("DateTime('Europe/Berlin')", pa.timestamp("s", tz="Europe/Berlin")), ("DateTime64(3)", pa.timestamp("ms", tz="UTC")),
    ("Array(Array(UInt16))", pa.list_(pa.list_(pa.uint16()))), ("Decimal(18, 4)", pa.float64()), ("UUID", pa.string()),
])
def test_arrow_types_of_clickhouse_types(ch_type, arrow):
    assert export.arrow_type(ch_type) == arrow


def test_unknown_types_are_inferred_from_the_values():
    assert export.arrow_type("AggregateFunction(count)") is None
    t = export.to_arrow(["n", "t"], ["AggregateFunction(count)", "Tuple(String, UInt8)"], [(3, ("a", 1))])
    assert t.column("n").to_pylist() == [3]
    assert t.column("t").to_pylist() == ['["a", 1]']  # mixed types: JSON text


def test_parquet_to_the_terminal_is_refused_before_any_query():
    r = CliRunner().invoke(app, ["sql", "SELECT 1", "--format", "parquet"],
                           env={"AIMASS_CLICKHOUSE_URL": "clickhouse://127.0.0.1:1/x"})
    assert r.exit_code == 2 and "--output" in r.output


def test_an_unreachable_server_is_one_line_with_what_to_do():
    r = CliRunner().invoke(app, ["sql", "SELECT 1", "--format", "csv"],
                           env={"AIMASS_CLICKHOUSE_URL": "clickhouse://127.0.0.1:1/x"})
    assert r.exit_code == 1 and "cannot reach ClickHouse" in r.output and "Traceback" not in r.output


def test_an_unknown_format_is_refused():
    r = CliRunner().invoke(app, ["sql", "SELECT 1", "--format", "xlsx"])
    assert r.exit_code == 2
