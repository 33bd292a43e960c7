"""Query results to files: CSV, JSON Lines and Parquet, for `aimass sql --format` and the tests.

A result is its column names, its ClickHouse types (as clickhouse-driver reports them with
``with_column_types=True``) and its rows as tuples. The ClickHouse types decide the Parquet schema, so
an empty result still writes a file with the right columns and types; CSV and JSON write what a
spreadsheet or ``jq`` expects: dates and times in ISO 8601, arrays as JSON, no ``None`` but empty
(CSV) or ``null`` (JSON).
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import enum
import io
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

FORMATS = ("table", "csv", "json", "parquet")


def _plain(v: Any) -> Any:
    """A value JSON can hold: dates as ISO text, decimals as floats, UUIDs and enums as text."""
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (uuid.UUID, enum.Enum)):
        return str(v.value if isinstance(v, enum.Enum) else v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, float) and v != v:  # NaN is not JSON
        return None
    return v


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(_plain(v), ensure_ascii=False)
    p = _plain(v)
    return "" if p is None else p


def write_csv(out: IO[str], columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    """RFC 4180 CSV with a header row; returns the rows written."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    n = 0
    for r in rows:
        w.writerow([_csv_cell(v) for v in r])
        n += 1
    return n


def write_json_lines(out: IO[str], columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    """One JSON object per row and line (JSON Lines); returns the rows written."""
    n = 0
    for r in rows:
        out.write(json.dumps({c: _plain(v) for c, v in zip(columns, r)}, ensure_ascii=False) + "\n")
        n += 1
    return n


# ---------------------------------------------------------------- Parquet
_INTS = {"Int8": "int8", "Int16": "int16", "Int32": "int32", "Int64": "int64",
         "UInt8": "uint8", "UInt16": "uint16", "UInt32": "uint32", "UInt64": "uint64"}


def _split_args(s: str) -> list[str]:
    """Top-level comma-separated arguments of a type: 'String, Array(UInt8)' -> two."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def arrow_type(ch_type: str):
    """The Arrow type for a ClickHouse type name; None when Arrow should infer it from the values."""
    import pyarrow as pa

    t = ch_type.strip()
    m = re.fullmatch(r"(\w+)\((.*)\)", t, re.S)
    name, inner = (m.group(1), m.group(2)) if m else (t, "")
    if name in ("Nullable", "LowCardinality"):
        return arrow_type(inner)
    if name in _INTS:
        return getattr(pa, _INTS[name])()
    if name == "Float32":
        return pa.float32()
    if name == "Float64":
        return pa.float64()
    if name in ("String", "FixedString", "Enum8", "Enum16", "UUID", "IPv4", "IPv6"):
        return pa.string()
    if name in ("Date", "Date32"):
        return pa.date32()
    if name == "DateTime":
        tz = inner.strip().strip("'") if inner else None
        return pa.timestamp("s", tz=tz or "UTC")
    if name == "DateTime64":
        args = _split_args(inner)
        precision = int(args[0]) if args else 3
        unit = "ms" if precision <= 3 else "us" if precision <= 6 else "ns"
        tz = args[1].strip("'") if len(args) > 1 else "UTC"
        return pa.timestamp(unit, tz=tz)
    if name == "Decimal" or name.startswith("Decimal"):
        return pa.float64()
    if name == "Bool":
        return pa.bool_()
    if name == "Array":
        item = arrow_type(inner)
        return pa.list_(item) if item is not None else None
    return None  # Tuple, Map, AggregateFunction, ...: inferred from the values


def _arrow_values(values: list, typ) -> list:
    import pyarrow as pa

    if typ is None:
        return [_plain(v) for v in values]
    if pa.types.is_string(typ):
        return [None if v is None else str(v.value if isinstance(v, enum.Enum) else v) for v in values]
    if pa.types.is_timestamp(typ):
        # clickhouse-driver returns naive datetimes in the server's time zone (UTC here, and the
        # sink's tables are UTC); an aware one is converted.
        out = []
        for v in values:
            if isinstance(v, dt.datetime) and v.tzinfo is None:
                v = v.replace(tzinfo=dt.timezone.utc)
            out.append(v)
        return out
    if pa.types.is_floating(typ):
        return [None if v is None else float(v) for v in values]
    return values


def to_arrow(columns: Sequence[str], types: Sequence[str], rows: Sequence[Sequence]):
    """A pyarrow Table of the result, typed from the ClickHouse types."""
    import pyarrow as pa

    arrays, fields = [], []
    for i, (name, ch_type) in enumerate(zip(columns, types)):
        typ = arrow_type(ch_type)
        values = [r[i] for r in rows]
        if typ is None and not values:
            arr = pa.array([], pa.string())
        elif typ is None:
            try:
                arr = pa.array(_arrow_values(values, None))
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # a tuple of mixed types, ...: JSON text
                arr = pa.array([None if v is None else json.dumps(_plain(v), ensure_ascii=False) for v in values],
                               pa.string())
        else:
            arr = pa.array(_arrow_values(values, typ), type=typ)
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_parquet(path: Path | str | IO[bytes], columns: Sequence[str], types: Sequence[str],
                  rows: Sequence[Sequence]) -> int:
    """A Parquet file (zstd-compressed) of the result; returns the rows written."""
    import pyarrow.parquet as pq

    table = to_arrow(columns, types, rows)
    pq.write_table(table, path, compression="zstd")
    return table.num_rows


def write(fmt: str, out: IO, columns: Sequence[str], types: Sequence[str], rows: Sequence[Sequence]) -> int:
    """Write a result in ``fmt`` (csv, json or parquet) to an open file (text for csv and json,
    binary for parquet)."""
    if fmt == "csv":
        return write_csv(out, columns, rows)
    if fmt == "json":
        return write_json_lines(out, columns, rows)
    if fmt == "parquet":
        return write_parquet(out, columns, types, rows)
    raise ValueError(f"unknown format {fmt!r}; one of csv, json, parquet")


def render_csv(columns: Sequence[str], rows: Iterable[Sequence]) -> str:
    buf = io.StringIO()
    write_csv(buf, columns, rows)
    return buf.getvalue()
