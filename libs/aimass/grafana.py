"""Grafana dashboards (deploy/grafana) as SQL: read a dashboard's ClickHouse queries and expand its
variables and the ClickHouse data source's macros into the SQL the plugin would send, so a test (or
a person) can run every panel against a server.

The macros are those of grafana-clickhouse-datasource v4 (pkg/macros/macros.go there), expanded the
same way; ``legacy=True`` expands the two that need functions ClickHouse 18.16 lacks
(toStartOfInterval, fromUnixTimestamp64Milli) to equivalents it runs. The provisioned dashboards use
only macros whose plugin expansion already runs on 18.16 (``PORTABLE_MACROS``): time buckets are
written ``toDateTime(intDiv(toUInt32(col), $__interval_s) * $__interval_s)`` rather than
``$__timeInterval(col)``.

Template variables: ``$name``, ``${name}``, ``${name:raw}``, ``${name:singlequote}``,
``${name:sqlstring}``, ``${name:csv}`` and ``[[name]]``; Grafana replaces them before the plugin
expands the macros, and so does ``expand``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CLICKHOUSE_DS = "grafana-clickhouse-datasource"

MACROS = ("fromTime", "toTime", "fromTime_ms", "toTime_ms", "timeFilter", "timeFilter_ms", "dateFilter",
          "dateTimeFilter", "dt", "timeInterval", "timeInterval_ms", "interval_s", "conditionalAll")
# Their plugin expansion runs on ClickHouse 18.16 as well as on a current server.
PORTABLE_MACROS = frozenset({"fromTime", "toTime", "timeFilter", "dateFilter", "dateTimeFilter", "dt",
                             "interval_s", "conditionalAll"})


class ExpandError(ValueError):
    pass


@dataclass(frozen=True)
class TimeRange:
    start: dt.datetime
    end: dt.datetime
    interval_s: float = 60.0  # Grafana's $__interval: the range over the panel's data points

    @classmethod
    def of(cls, start: dt.datetime, end: dt.datetime, max_data_points: int = 1000,
           min_interval_s: float = 1.0) -> "TimeRange":
        span = (end - start).total_seconds()
        return cls(start, end, max(min_interval_s, span / max_data_points))


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def _secs(t: dt.datetime) -> int:
    return int(_utc(t).timestamp())


def _millis(t: dt.datetime) -> int:
    return int(round(_utc(t).timestamp() * 1000))


def _date(t: dt.datetime) -> str:
    return f"toDate('{_utc(t).strftime('%Y-%m-%d')}')"


def _split_args(s: str) -> list[str]:
    out, depth, cur, quote = [], 0, [], None
    for ch in s:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return [a for a in out if a] if len(out) > 1 or out[0] else []


def _expand_one(name: str, args: list[str], rng: TimeRange, legacy: bool, variables: dict) -> str:
    frm, to = rng.start, rng.end

    def need(n: int) -> None:
        if len(args) != n:
            raise ExpandError(f"$__{name} takes {n} argument(s), got {len(args)}: {args}")

    if name == "fromTime":
        return f"toDateTime({_secs(frm)})"
    if name == "toTime":
        return f"toDateTime({_secs(to)})"
    if name in ("fromTime_ms", "toTime_ms"):
        t = frm if name == "fromTime_ms" else to
        return f"toDateTime({_secs(t)})" if legacy else f"fromUnixTimestamp64Milli({_millis(t)})"
    if name == "timeFilter":
        need(1)
        c = args[0]
        return f"{c} >= toDateTime({_secs(frm)}) AND {c} <= toDateTime({_secs(to)})"
    if name == "timeFilter_ms":
        need(1)
        c = args[0]
        if legacy:
            return f"{c} >= toDateTime({_secs(frm)}) AND {c} <= toDateTime({_secs(to)})"
        return f"{c} >= fromUnixTimestamp64Milli({_millis(frm)}) AND {c} <= fromUnixTimestamp64Milli({_millis(to)})"
    if name == "dateFilter":
        need(1)
        c = args[0]
        return f"{c} >= {_date(frm)} AND {c} <= {_date(to)}"
    if name in ("dateTimeFilter", "dt"):
        need(2)
        d, c = args
        return (f"({d} >= {_date(frm)} AND {d} <= {_date(to)}) AND "
                f"({c} >= toDateTime({_secs(frm)}) AND {c} <= toDateTime({_secs(to)}))")
    if name == "interval_s":
        return str(int(max(rng.interval_s, 1)))
    if name == "timeInterval":
        need(1)
        n = int(max(rng.interval_s, 1))
        if legacy:
            return f"toDateTime(intDiv(toUInt32(toDateTime({args[0]})), {n}) * {n})"
        return f"toStartOfInterval(toDateTime({args[0]}), INTERVAL {n} second)"
    if name == "timeInterval_ms":
        need(1)
        n = int(max(rng.interval_s * 1000, 1))
        if legacy:  # no DateTime64 on 18.16: whole seconds
            s = max(1, n // 1000)
            return f"toDateTime(intDiv(toUInt32(toDateTime({args[0]})), {s}) * {s})"
        return f"toStartOfInterval(toDateTime64({args[0]}, 3), INTERVAL {n} millisecond)"
    if name == "conditionalAll":
        return _conditional_all(args, variables)
    raise ExpandError(f"unknown macro $__{name}")


def _conditional_all(args: list[str], variables: dict) -> str:
    if len(args) != 2:
        raise ExpandError(f"$__conditionalAll takes 2 arguments, got {len(args)}: {args}")
    var = args[1].strip().lstrip("$").strip("{}").split(":")[0]
    value = variables.get(var)
    return "1=1" if value is None or value in ("$__all", ["$__all"]) else args[0]


_MACRO = re.compile(r"\$__(" + "|".join(sorted(MACROS, key=len, reverse=True)) + r")\b")


def macros_used(sql: str) -> set[str]:
    return set(_MACRO.findall(sql))


def _replace_macros(sql: str, replace) -> str:
    """Call ``replace(name, args)`` for each macro in ``sql``; it returns the expansion, or None to
    leave that macro as it is."""
    out, i = [], 0
    while True:
        m = _MACRO.search(sql, i)
        if not m:
            out.append(sql[i:])
            return "".join(out)
        out.append(sql[i:m.start()])
        name, j, args = m.group(1), m.end(), []
        if j < len(sql) and sql[j] == "(":
            depth, k = 0, j
            while k < len(sql):
                depth += sql[k] == "("
                depth -= sql[k] == ")"
                if depth == 0:
                    break
                k += 1
            if depth:
                raise ExpandError(f"unbalanced parentheses after $__{name}")
            args = _split_args(sql[j + 1:k])
            j = k + 1
        expanded = replace(name, args)
        out.append(sql[m.start():j] if expanded is None else expanded)
        i = j


def expand_conditional_all(sql: str, variables: dict) -> str:
    """``$__conditionalAll(condition, $var)``: the plugin decides it before Grafana replaces the
    variables, from whether ``var`` selects every value."""
    def replace(name, args):
        return _conditional_all(args, variables) if name == "conditionalAll" else None
    return _replace_macros(sql, replace)


def expand_macros(sql: str, rng: TimeRange, *, legacy: bool = False, variables: dict | None = None) -> str:
    """Replace the data source's macros in ``sql`` (variables already replaced)."""
    result = _replace_macros(sql, lambda name, args: _expand_one(name, args, rng, legacy, variables or {}))
    left = re.search(r"\$__\w+", result)
    if left:
        raise ExpandError(f"{left.group(0)} is not a macro of {CLICKHOUSE_DS}")
    return result


def _format(value, fmt: str | None) -> str:
    values = value if isinstance(value, list) else [value]
    values = [str(v) for v in values]
    if fmt in (None, "raw", "csv"):
        return ",".join(values)
    if fmt in ("singlequote", "sqlstring"):
        return ",".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    raise ExpandError(f"variable format {fmt!r} is not supported here")


_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(?!__)(\w+)")


def interpolate(sql: str, variables: dict) -> str:
    """Replace dashboard variables the way Grafana does before the query goes to the plugin."""
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        if name not in variables:
            raise ExpandError(f"dashboard variable ${name} has no value")
        return _format(variables[name], m.group(2))
    return _VAR.sub(sub, sql)


def expand(sql: str, rng: TimeRange, variables: dict | None = None, *, legacy: bool = False) -> str:
    """A panel's SQL as the plugin sends it: variables, then macros."""
    variables = variables or {}
    sql = expand_conditional_all(sql, variables)
    return expand_macros(interpolate(sql, variables), rng, legacy=legacy, variables=variables)


# ---------------------------------------------------------------- dashboards
@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    sql: str
    format: int      # the plugin's: 0 time series, 1 table
    panel_type: str  # stat, timeseries, table, barchart, ...


def load(path: Path | str) -> dict:
    return json.loads(Path(path).read_text())


def _ds_type(ds) -> str | None:
    return ds.get("type") if isinstance(ds, dict) else None


def iter_panels(dashboard: dict) -> Iterator[dict]:
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])  # collapsed rows hold their panels


def clickhouse_queries(dashboard: dict) -> list[PanelQuery]:
    out = []
    for p in iter_panels(dashboard):
        for t in p.get("targets", []):
            ds = _ds_type(t.get("datasource")) or _ds_type(p.get("datasource"))
            if ds == CLICKHOUSE_DS:
                out.append(PanelQuery(dashboard.get("title", ""), p.get("title", ""), t.get("refId", "A"),
                                      t["rawSql"], int(t.get("format", 1)), p.get("type", "")))
    return out


def query_variables(dashboard: dict) -> list[dict]:
    """The dashboard's ClickHouse query variables, in order (later ones may use earlier ones)."""
    return [v for v in dashboard.get("templating", {}).get("list", [])
            if v.get("type") == "query" and _ds_type(v.get("datasource")) == CLICKHOUSE_DS]


def variable_sql(var: dict) -> str:
    q = var.get("query")
    return q.get("rawSql") or q.get("query") if isinstance(q, dict) else q


def choose(var: dict, options: list[str]) -> str:
    """The value Grafana starts with: the saved current value when the query still offers it, else the first."""
    current = (var.get("current") or {}).get("value")
    if isinstance(current, list):
        current = current[0] if current else None
    if current is not None and current in options:
        return current
    if not options:
        raise ExpandError(f"variable {var.get('name')} has no options")
    return options[0]
