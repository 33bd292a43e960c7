"""The model registry on the real broker and ClickHouse: the HTTP API (token, push, routing changes
visible on the models control topic, statuses), the registry worker (API up, drift reported as a model
event), and the monitoring SQL on the local ClickHouse 18.16."""

from __future__ import annotations

import asyncio
import hashlib
import pickle
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

import registry_dataset as data
from aimass import contracts, control
from aimass.clickhouse.client import insert
from aimass.clickhouse.schema import COLUMNS
from aimass.contracts import ModelEvent, ModelRouting
from aimass.settings import RegistrySettings
from aimass_registry import api, monitoring
from aimass_registry.service import Registry

pytestmark = pytest.mark.integration

MODELS = Path(__file__).resolve().parents[2] / "models"
PEDSSD = MODELS / "pedssd"
TOKEN = "test-registry-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _routing(settings) -> ModelRouting | None:
    value = await control.latest(settings, contracts.TOPIC_CONTROL_MODELS)
    return None if value is None else contracts.decode(value, ModelRouting)


def test_http_api_token_push_routing_and_statuses(ns, tmp_path):
    settings = ns.settings(RegistrySettings, model_store=tmp_path / "store", max_model_mb=13)
    registry = Registry(settings)

    async def scenario():
        runner, url = await api.serve(registry, TOKEN, "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as s:
                async def call(method, path, expect, **kw):
                    headers = {**AUTH, **kw.pop("headers", {})}
                    async with s.request(method, url + path, headers=headers, **kw) as r:
                        body = await r.json()
                        assert r.status == expect, body
                        return body

                # no token, a wrong one, another scheme: 401, and the token is never echoed
                for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"}):
                    for path in ("/v1/models", "/v1/nowhere"):
                        async with s.get(url + path, headers=headers) as r:
                            text = await r.text()
                            assert r.status == 401 and "bearer token" in text and TOKEN not in text
                            assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert await call("GET", "/v1/models", 200) == {"models": []}
                assert await call("GET", "/v1/routing", 200) == {"routing": None}

                # push: a raw body with query parameters, and a multipart form with a model.yaml
                onnx = (PEDSSD / "model.onnx").read_bytes()
                pushed = await call("POST", "/v1/models", 201, data=onnx, params={
                    "name": "ped", "format": "tf_ssd", "classes": "background,person", "class_map": "person=person",
                    "input_size": "300x300", "filename": "ped.onnx"}, headers={"Content-Type": "application/octet-stream"})
                assert pushed["ref"] == "ped:1" and pushed["sha256"] == hashlib.sha256(onnx).hexdigest()
                form = aiohttp.FormData()
                form.add_field("file", onnx, filename="model.onnx", content_type="application/octet-stream")
                form.add_field("spec", (PEDSSD / "model.yaml").read_text())
                form.add_field("options", '{"version": "7"}')
                assert (await call("POST", "/v1/models", 201, data=form))["ref"] == "pedssd:7"

                # refused pushes: not ONNX (400), too large while streaming (413), an existing version (409)
                refused = await call("POST", "/v1/models", 400, data=pickle.dumps({"w": 1}), params={"name": "x"})
                assert refused["reason"] == "not_onnx" and "pickle" in refused["error"]
                big = (MODELS / "nanodet-g-416" / "model.onnx").read_bytes()  # 15 MB, the limit is 13
                refused = await call("POST", "/v1/models", 413, data=big, params={"name": "nd", "format": "nanodet"},
                                     headers={"Content-Type": "application/octet-stream"})
                assert refused["reason"] == "too_large" and "13 MB" in refused["error"]
                assert (await call("POST", "/v1/models", 409, data=onnx, params={"name": "ped", "version": "1"}))[
                    "reason"] == "exists"
                assert not (registry.store.root / "tmp").exists()

                # routing: promote, canary, rollback, each a new revision on the control topic
                assert (await call("POST", "/v1/routing/promote", 200, json={"model": "ped:1"}))["revision"] == 1
                canary = await call("POST", "/v1/routing/canary", 200, json={"model": "pedssd:7", "percent": 10})
                assert canary["revision"] == 2 and canary["routing"]["groups"]["default"]["canary"]["percent"] == 10
                on_topic = await _routing(settings)
                assert on_topic.revision == 2 and on_topic.groups["default"].canary.model == "pedssd:7"
                statuses = {m["ref"]: m["status"] for m in (await call("GET", "/v1/models", 200))["models"]}
                assert statuses == {"ped:1": "active", "pedssd:7": "canary"}
                assert (await call("POST", "/v1/routing/canary", 404, json={"model": "nope:1", "percent": 5}))[
                    "reason"] == "unknown"
                assert (await call("POST", "/v1/routing/rollback", 200, json={}))["revision"] == 3
                on_topic = await _routing(settings)
                assert on_topic.revision == 3 and on_topic.groups["default"].canary is None

                # retire: refused while routed (409), done when not
                refused = await call("POST", "/v1/models/ped:1/retire", 409, json={"reason": "old"})
                assert "still routed (default:active)" in refused["error"]
                assert (await call("POST", "/v1/models/pedssd:7/retire", 200, json={"reason": "canary lost"}))["retired"]
                shown = await call("GET", "/v1/models/pedssd:7", 200)
                assert shown["status"] == "retired" and shown["meta"]["retired_reason"] == "canary lost"
                assert (await call("POST", "/v1/routing/promote", 409, json={"model": "pedssd:7"}))["reason"] == "routing"
                assert (await _routing(settings)).revision == 3  # nothing refused was published
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


async def _drift_events(settings, deadline_s: float) -> list[ModelEvent]:
    c = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False)
    await c.start()
    try:
        tp = TopicPartition(settings.topic(contracts.TOPIC_MODEL_EVENTS), 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        found: list[ModelEvent] = []
        end = time.monotonic() + deadline_s
        while time.monotonic() < end and not found:
            for rec in (await c.getmany(tp, timeout_ms=500)).get(tp, []):
                ev = contracts.decode(rec.value, ModelEvent)
                if ev.event == "drift":
                    found.append(ev)
        return found
    finally:
        await c.stop()


def test_registry_worker_serves_the_api_and_reports_drift(ns, ns_ch, workers, tmp_path):
    for table, rows in data.rows(time.time()).items():
        insert(ns_ch, table, COLUMNS[table], rows)
    port = _free_port()
    workers.env.update(AIMASS_REGISTRY_TOKEN=TOKEN, AIMASS_MODEL_STORE=str(tmp_path / "store"),
                       AIMASS_REGISTRY_PORT=str(port), AIMASS_DRIFT_CHECK_S="1", AIMASS_DRIFT_WINDOW_S="600",
                       AIMASS_DRIFT_BASELINE_S="3600")
    workers.start("registry", deadline_s=60)
    url = f"http://127.0.0.1:{port}"

    async def requests():
        async with aiohttp.ClientSession() as s:
            async with s.get(url + "/v1/models") as r:
                assert r.status == 401
            async with s.get(url + "/v1/models", headers=AUTH) as r:
                assert r.status == 200 and await r.json() == {"models": []}
            async with s.get(url + "/v1/monitoring/compare", params={"window": "10m"}, headers=AUTH) as r:
                body = await r.json()
                assert r.status == 200, body
                return body

    compared = asyncio.run(requests())
    assert {(row["model"], row["label"]): row["detections_per_frame"] for row in compared["rows"]} == {
        ("det:1", "person"): 0.1, ("det:1", "vehicle"): 1.0, ("det:2", "person"): 2.0, ("det:2", "vehicle"): 1.0}
    events = asyncio.run(_drift_events(ns.settings(), 30))
    assert [(e.model, e.service, e.value) for e in events] == [("det:1", "registry", 0.05)], workers.logs("registry")
    assert "person" in events[0].detail
    log = (tmp_path / "registry.log").read_text()
    assert f"registry API listening on {url}" in log and "model det:1 drifts" in log and TOKEN not in log


def test_monitoring_sql_on_the_local_clickhouse(ns_ch):
    """The same queries and figures as on chdb (tests/unit/test_registry_monitoring.py), on 18.16."""
    now = 1_795_000_030.0
    for table, rows in data.rows(now).items():
        insert(ns_ch, table, COLUMNS[table], rows)
    columns, rows = monitoring.compare(ns_ch, 600, now_s=now)
    got = {(r[0], r[9]): dict(zip(columns, r)) for r in rows}
    assert {k: (v["frames"], v["detections_per_frame"], v["p50_ms"], v["mean_batch"], v["run_failures"])
            for k, v in got.items()} == {
        ("det:1", "person"): (60, 0.1, 20.0, 4.0, 0), ("det:1", "vehicle"): (60, 1.0, 20.0, 4.0, 0),
        ("det:2", "person"): (20, 2.0, 40.0, 1.0, 2), ("det:2", "vehicle"): (20, 1.0, 40.0, 1.0, 2)}
    assert got[("det:1", "person")]["median_score"] == 0.8 and got[("det:2", "person")]["load_failures"] == 1
    assert monitoring.drift(ns_ch, 600, 3600, 0.5, now_s=now)[1] == [("det:1", "person", 60, 2.0, 60, 0.1, 0.05)]
    _, events = monitoring.events(ns_ch, model="det:2")
    assert sorted(e[1] for e in events) == ["load_failed", "run_failed", "run_failed"]
