"""The Grafana side without a server: macro and variable expansion (aimass.grafana) against the
grafana-clickhouse-datasource plugin's documented output, and the provisioned files' structure."""

import datetime as dt
import re
from pathlib import Path

import pytest
import yaml

from aimass import grafana
from aimass.grafana import ExpandError, TimeRange

GRAFANA = Path(__file__).parents[2] / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
UTC = dt.timezone.utc
# The plugin README's examples: from 1415792726 to 1447328726, an interval of 20 s.
RNG = TimeRange(dt.datetime.fromtimestamp(1415792726, UTC), dt.datetime.fromtimestamp(1447328726, UTC), 20)


@pytest.mark.parametrize("sql, expanded", [
    ("$__timeFilter(time)", "time >= toDateTime(1415792726) AND time <= toDateTime(1447328726)"),
    ("$__fromTime", "toDateTime(1415792726)"),
    ("$__toTime", "toDateTime(1447328726)"),
    ("$__interval_s", "20"),
    ("$__timeInterval(column)", "toStartOfInterval(toDateTime(column), INTERVAL 20 second)"),
    ("$__dateFilter(date)", "date >= toDate('2014-11-12') AND date <= toDate('2015-11-12')"),
    ("$__dateTimeFilter(date, at)",
     "(date >= toDate('2014-11-12') AND date <= toDate('2015-11-12')) AND "
     "(at >= toDateTime(1415792726) AND at <= toDateTime(1447328726))"),
    ("$__dt(d, t)", "(d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')) AND "
                    "(t >= toDateTime(1415792726) AND t <= toDateTime(1447328726))"),
])
def test_macros_expand_as_the_plugin_documents(sql, expanded):
    assert grafana.expand(sql, RNG) == expanded


def test_millisecond_macros():
    rng = TimeRange(dt.datetime.fromtimestamp(1415792726.123, UTC), dt.datetime.fromtimestamp(1447328726.456, UTC), 0.02)
    assert grafana.expand("$__timeFilter_ms(time)", rng) == \
        "time >= fromUnixTimestamp64Milli(1415792726123) AND time <= fromUnixTimestamp64Milli(1447328726456)"
    assert grafana.expand("$__timeInterval_ms(column)", rng) == \
        "toStartOfInterval(toDateTime64(column, 3), INTERVAL 20 millisecond)"
    assert grafana.expand("$__fromTime_ms", rng) == "fromUnixTimestamp64Milli(1415792726123)"


def test_legacy_expansion_avoids_what_clickhouse_18_16_lacks():
    sql = grafana.expand("SELECT $__timeInterval(captured), $__timeFilter_ms(captured)", RNG, legacy=True)
    assert "toStartOfInterval" not in sql and "fromUnixTimestamp64Milli" not in sql
    assert "toDateTime(intDiv(toUInt32(toDateTime(captured)), 20) * 20)" in sql


def test_macro_arguments_may_hold_parentheses_and_commas():
    sql = grafana.expand("WHERE $__timeFilter(toDateTime(intDiv(at_ms, 1000))) AND x IN (1, 2)", RNG)
    assert sql == ("WHERE toDateTime(intDiv(at_ms, 1000)) >= toDateTime(1415792726) AND "
                   "toDateTime(intDiv(at_ms, 1000)) <= toDateTime(1447328726) AND x IN (1, 2)")


def test_conditional_all():
    assert grafana.expand("$__conditionalAll(camera_id IN ('a'), $camera)", RNG, {"camera": "$__all"}) == "1=1"
    assert grafana.expand("$__conditionalAll(camera_id = '${camera}', $camera)", RNG, {"camera": "c1"}) == \
        "camera_id = 'c1'"


def test_unknown_macros_and_variables_are_errors():
    with pytest.raises(ExpandError, match=r"\$__timeGroup"):
        grafana.expand("SELECT $__timeGroup(t, '1m')", RNG)
    with pytest.raises(ExpandError, match="takes 1 argument"):
        grafana.expand("$__timeFilter(a, b)", RNG)
    with pytest.raises(ExpandError, match=r"\$camera"):
        grafana.expand("WHERE camera_id = '${camera}'", RNG, {"site": "hq"})


def test_variables_in_grafana_syntax():
    v = {"site": "hq", "cams": ["a", "b'c"]}
    assert grafana.interpolate("'$site' '${site}' [[site]] ${site:raw}", v) == "'hq' 'hq' hq hq"
    assert grafana.interpolate("IN (${cams:singlequote})", v) == "IN ('a','b\\'c')"
    assert grafana.interpolate("${cams:csv}", v) == "a,b'c"


def test_a_saved_variable_value_is_kept_when_still_offered():
    var = {"name": "camera", "current": {"value": "cam-lobby"}}
    assert grafana.choose(var, ["cam-dock", "cam-lobby"]) == "cam-lobby"
    assert grafana.choose(var, ["cam-dock"]) == "cam-dock"
    with pytest.raises(ExpandError):
        grafana.choose(var, [])


def test_time_range_interval_follows_the_data_points():
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert TimeRange.of(start, start + dt.timedelta(hours=1), max_data_points=60).interval_s == 60
    assert TimeRange.of(start, start + dt.timedelta(seconds=10), max_data_points=1000).interval_s == 1


# ---------------------------------------------------------------- the provisioned files
def _dashboards():
    return {p.name: grafana.load(p) for p in DASHBOARDS}


def test_the_four_dashboards_are_there_with_unique_uids():
    ds = _dashboards()
    assert set(ds) == {"site-overview.json", "camera-drilldown.json", "pipeline-health.json", "model-performance.json"}
    uids = [d["uid"] for d in ds.values()]
    assert len(set(uids)) == 4 and all(u.startswith("aimass-") for u in uids)
    for d in ds.values():
        assert grafana.clickhouse_queries(d), d["title"]


def test_every_clickhouse_panel_uses_the_provisioned_source_and_portable_macros():
    for name, d in _dashboards().items():
        defined = {v["name"] for v in d["templating"]["list"]}
        for p in grafana.iter_panels(d):
            for t in p.get("targets", []):
                if t["datasource"]["type"] != grafana.CLICKHOUSE_DS:
                    continue
                where = f"{name}: {p['title']}"
                assert t["datasource"]["uid"] == "aimass-clickhouse" and t["editorType"] == "sql", where
                assert t["format"] == (0 if p["type"] == "timeseries" else 1), where
                assert t["queryType"] == ("timeseries" if t["format"] == 0 else "table"), where
                used = grafana.macros_used(t["rawSql"])
                assert used <= grafana.PORTABLE_MACROS, f"{where}: {used - grafana.PORTABLE_MACROS} fail on 18.16"
                names = set(re.findall(r"\$\{(\w+)", t["rawSql"])) | set(re.findall(r"\$(?!__)(\w+)", t["rawSql"]))
                assert names <= defined, f"{where}: undefined variables {names - defined}"
                assert p.get("description"), f"{where}: say what the panel shows"


def test_panels_do_not_overlap():
    for name, d in _dashboards().items():
        cells = set()
        for p in d["panels"]:
            g = p["gridPos"]
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert g["x"] + g["w"] <= 24 and not cells & mine, f"{name}: {p['title']}"
            cells |= mine


def test_camera_drilldown_has_a_camera_variable_and_the_latest_violations():
    d = _dashboards()["camera-drilldown.json"]
    assert [v["name"] for v in grafana.query_variables(d)] == ["site", "camera"]
    [latest] = [q for q in grafana.clickhouse_queries(d) if q.panel == "Latest violations"]
    assert "FROM violations FINAL" in latest.sql and "camera_id = '${camera}'" in latest.sql
    assert "ORDER BY at_ms DESC" in latest.sql


def test_the_lag_panel_reads_prometheus_in_a_row_of_its_own():
    d = _dashboards()["pipeline-health.json"]
    panels = d["panels"]
    [row] = [i for i, p in enumerate(panels) if p["type"] == "row"]
    assert "Prometheus" in panels[row]["title"]
    for i, p in enumerate(panels):
        kinds = {t["datasource"]["type"] for t in p.get("targets", [])}
        assert kinds == ({"prometheus"} if i > row else {grafana.CLICKHOUSE_DS} if i < row else set()), p["title"]
    assert "aimass_consumer_lag" in panels[row + 1]["targets"][0]["expr"]
    for name, other in _dashboards().items():
        if name != "pipeline-health.json":
            assert all(t["datasource"]["type"] == grafana.CLICKHOUSE_DS
                       for p in grafana.iter_panels(other) for t in p.get("targets", [])), name


def test_datasources_come_from_the_environment():
    ch = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text())
    [src] = ch["datasources"]
    assert src["type"] == grafana.CLICKHOUSE_DS and src["uid"] == "aimass-clickhouse"
    j = src["jsonData"]
    assert (j["host"], j["port"], j["username"], j["defaultDatabase"]) == \
        ("${CLICKHOUSE_HOST}", "${CLICKHOUSE_PORT}", "${CLICKHOUSE_USER}", "${CLICKHOUSE_DATABASE}")
    assert src["secureJsonData"]["password"] == "${CLICKHOUSE_PASSWORD}" and j["protocol"] == "native"
    prom = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert prom["datasources"][0]["uid"] == "aimass-prometheus" and prom["datasources"][0]["url"] == "${PROMETHEUS_URL}"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "aimass.yaml").read_text())
    [provider] = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/etc/grafana/dashboards"
