"""Model serving in the detector under a live stream: versions switch between batches (every frame
served exactly once across a promote and a rollback), a canary takes its share of frames, a shadow's
results are recorded apart, and a model that fails at run time is rolled back by the detector itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from aimass import contracts, control
from aimass import routing as R
from aimass.clickhouse.client import query_rows
from aimass.settings import GatewaySettings, RegistrySettings
from aimass_gateway.producer import GatewayProducer
from aimass_registry.service import Registry
from aimass_registry.validate import PushOptions
from conftest import wait_until

pytestmark = pytest.mark.integration
MODELS = Path(__file__).resolve().parents[2] / "models"
NANODET, PEDSSD = "nanodet-g-416:1", "pedssd:1"


def _rows(client, sql: str):
    return query_rows(client, sql)[1]


def _image(i: int, white: bool = False) -> np.ndarray:
    img = np.full((240, 320, 3), 60 + i % 100, np.uint8)
    img[60:180, 100:140] = 255 if white else 200
    return img


def _push(reg: Registry, folder: str) -> str:
    spec = yaml.safe_load((MODELS / folder / "model.yaml").read_text())
    return reg.push(MODELS / folder / "model.onnx", PushOptions(spec=spec, spec_source=f"{folder}/model.yaml")).ref


@pytest.fixture
def registry(ns, tmp_path, workers):
    """A model store for this test with NanoDet and the person SSD pushed, NanoDet routed to every
    camera, and the workers pointed at the store."""
    store = tmp_path / "store"
    reg = Registry(ns.settings(RegistrySettings, model_store=store))
    assert _push(reg, "nanodet-g-416") == NANODET and _push(reg, "pedssd") == PEDSSD
    asyncio.run(reg.promote(NANODET, by="test"))
    workers.env["AIMASS_MODEL_STORE"] = str(store)
    return reg


async def _stream(ns, cameras: list[str], frames_each: int, at: dict[int, object] | None = None, white: bool = False,
                  fps: float = 10.0) -> None:
    """Send ``frames_each`` frames per camera at ``fps`` in all; at step k, await ``at[k]()`` (a routing change)."""
    gw = GatewayProducer(ns.settings(GatewaySettings), "test-site")
    async with gw:
        for k in range(frames_each):
            if at and k in at:
                await at[k]()
            for cam in cameras:
                await gw.send_frame(cam, k, contracts.now_ms(), _image(k, white))
                await asyncio.sleep(1.0 / fps)
    assert gw.counters.send_errors == 0


def test_promote_and_rollback_under_load_serve_every_frame_exactly_once(ns, ns_ch, workers, registry):
    workers.start("detector", "sink")
    cams, n = ["cam-a", "cam-b"], 45
    asyncio.run(_stream(ns, cams, n, at={15: lambda: registry.promote(PEDSSD, by="test"),
                                         30: lambda: registry.rollback(by="test")}))
    wait_until(lambda: _rows(ns_ch, "SELECT count() FROM frames FINAL")[0][0] == n * len(cams), 90, "every frame")
    # Exactly once: no frame twice even before a merge could fold duplicates, none missing.
    assert _rows(ns_ch, "SELECT count(), uniqExact(camera_id, seq) FROM frames")[0] == (n * len(cams), n * len(cams))
    for cam in cams:
        served = [r[0] for r in _rows(ns_ch, f"SELECT model_name FROM frames FINAL WHERE camera_id = '{cam}' ORDER BY seq")]
        runs = [m for i, m in enumerate(served) if i == 0 or served[i - 1] != m]
        assert runs == ["nanodet-g-416", "pedssd", "nanodet-g-416"], (cam, served, workers.logs("detector"))
    wait_until(lambda: {r[0] for r in _rows(ns_ch, "SELECT revision FROM model_events WHERE event = 'switched'")}
               >= {1, 2, 3}, 30, "switch events for revisions 1 to 3")


def test_a_canary_takes_its_share_and_a_shadow_is_recorded_apart(ns, ns_ch, workers, registry):
    routing = asyncio.run(registry.canary(PEDSSD, 50, by_key="frame", by="test"))
    routing = asyncio.run(registry.shadow(PEDSSD, by="test"))  # runs on the frames the canary leaves to NanoDet
    workers.start("detector", "sink")
    n = 60
    asyncio.run(_stream(ns, ["cam-c"], n, fps=20))
    wait_until(lambda: _rows(ns_ch, "SELECT count() FROM frames FINAL")[0][0] == n, 90, "every frame")
    served = dict(_rows(ns_ch, "SELECT seq, model_name FROM frames FINAL"))
    expected = {s: R.route(routing, "cam-c", s)[0].split(":")[0] for s in range(n)}
    assert served == expected  # each frame where the routing's stable hash sends it
    share = sum(m == "pedssd" for m in served.values()) / n
    assert 0.35 < share < 0.65, share  # canary at 50 % of the frames, within 15 points on 60 frames
    on_nanodet = {s for s, m in served.items() if m == "nanodet-g-416"}
    wait_until(lambda: _rows(ns_ch, "SELECT count() FROM shadow_results FINAL")[0][0] == len(on_nanodet), 30,
               "a shadow result for every frame NanoDet served")
    rows = _rows(ns_ch, "SELECT seq, model, shadow FROM shadow_results FINAL")
    assert {r[0] for r in rows} == on_nanodet and {(r[1], r[2]) for r in rows} == {(NANODET, PEDSSD)}
    # The shadow's results never became detections: one detections message per frame, nothing more.
    assert _rows(ns_ch, "SELECT count() FROM frames")[0][0] == n


def _fails_on_bright_frames(folder: Path) -> Path:
    """A yolov8-format model that passes the registry's probe (its synthetic frames stay below 0.95 of
    full scale) and fails at run time on any frame with a white pixel: its output is reshaped to a
    size that does not fit when the input's maximum passes 0.95."""
    n = helper.make_node
    const = np.zeros((1, 5, 8), np.float32)
    nodes = [
        n("Shape", ["images"], ["batch"], start=0, end=1),
        n("Constant", [], ["c"], value=numpy_helper.from_array(const, "c")),
        n("Constant", [], ["rest"], value=numpy_helper.from_array(np.array([5, 8], np.int64), "rest")),
        n("Concat", ["batch", "rest"], ["shape_ok"], axis=0),
        n("Expand", ["c", "shape_ok"], ["out_ok"]),
        n("ReduceMax", ["images"], ["mx"], keepdims=0),
        n("Constant", [], ["limit"], value=numpy_helper.from_array(np.array(0.95, np.float32), "limit")),
        n("Greater", ["mx", "limit"], ["bright"]),
        n("Cast", ["bright"], ["bright_i"], to=TensorProto.INT64),
        n("Constant", [], ["zeros2"], value=numpy_helper.from_array(np.array([0, 0], np.int64), "zeros2")),
        n("Constant", [], ["axis0"], value=numpy_helper.from_array(np.array([0], np.int64), "axis0")),
        n("Unsqueeze", ["bright_i", "axis0"], ["bright_1"]),
        n("Concat", ["zeros2", "bright_1"], ["grow"], axis=0),
        n("Add", ["shape_ok", "grow"], ["shape"]),
        n("Reshape", ["out_ok", "shape"], ["output0"]),
    ]
    graph = helper.make_graph(nodes, "fails-bright",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 64, 64])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 5, "A"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path = folder / "fails.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_a_model_that_fails_at_run_time_is_rolled_back_and_its_frames_served(ns, ns_ch, workers, registry, tmp_path):
    bad = registry.push(_fails_on_bright_frames(tmp_path), PushOptions(
        name="fragile", version="1", format="yolov8", input_name="images", input_width=64, input_height=64,
        layout="NCHW", dtype="float32", channels="RGB", mean=[0, 0, 0], std=[255, 255, 255], classes=["person"],
        class_map={"person": "person"})).ref  # the registry's probe passes it
    asyncio.run(registry.promote(bad, by="test"))
    workers.start("detector", "sink")
    n = 12
    asyncio.run(_stream(ns, ["cam-f"], n, white=True))
    wait_until(lambda: _rows(ns_ch, "SELECT count() FROM frames FINAL")[0][0] == n, 90, "every frame")
    assert _rows(ns_ch, "SELECT DISTINCT model_name FROM frames FINAL") == [("nanodet-g-416",)]
    assert _rows(ns_ch, "SELECT count() FROM frames")[0][0] == n
    wait_until(lambda: {r[0] for r in _rows(ns_ch, "SELECT event FROM model_events WHERE model = 'fragile:1'")}
               >= {"run_failed", "rolled_back"}, 30, "the failure and the rollback reported")
    latest = contracts.decode(asyncio.run(control.latest(ns.settings(), contracts.TOPIC_CONTROL_MODELS)),
                              contracts.ModelRouting)
    assert latest.groups["default"].active == NANODET and latest.by.startswith("detector")
    assert "failed at run time" in latest.reason
