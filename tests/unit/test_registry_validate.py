"""Push validation (aimass_registry.validate through Registry.push): what is refused, why, without
loading it, and that a refused push leaves nothing in the store; a good push lands where the detector
loads it."""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aimass.settings import RegistrySettings
from aimass_detector.engine import Detector
from aimass_registry.service import MemoryRouting, Registry
from aimass.model_store import ModelStore
from aimass_registry.validate import PushOptions, PushRefused, parse_class_map, parse_size, read_spec_file

MODELS = Path(__file__).resolve().parents[2] / "models"
PEDSSD = MODELS / "pedssd"
NANODET = MODELS / "nanodet-g-416"


@pytest.fixture
def registry(tmp_path) -> Registry:
    settings = RegistrySettings(model_store=tmp_path / "store", max_model_mb=50)
    return Registry(settings, routing=MemoryRouting())


def _empty(store: ModelStore) -> bool:
    """Nothing stored: no blob, no version, no leftover staging."""
    return not [p for p in store.root.rglob("*") if p.is_file()] and not (store.root / "tmp").exists()


def _refused(registry: Registry, path: Path, reason: str, match: str, **opts) -> PushRefused:
    with pytest.raises(PushRefused, match=match) as exc:
        registry.push(path, PushOptions(**opts), display=str(path))
    assert exc.value.reason == reason, exc.value
    assert str(path) in str(exc.value)
    assert _empty(registry.store)
    return exc.value


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fail the test if anything tries to unpickle or to open an ONNX Runtime session."""
    import onnxruntime

    def forbidden(*a, **k):
        raise AssertionError("a file that is not ONNX was loaded")
    monkeypatch.setattr(onnxruntime, "InferenceSession", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)


class _Boom:
    """Unpickling this creates a file: proof that nothing unpickled it."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_good_push_of_pedssd_lands_in_the_store_and_the_detector_loads_it(registry, tmp_path):
    steps = []
    rec = registry.push(PEDSSD / "model.onnx", PushOptions(spec=read_spec_file(PEDSSD / "model.yaml")),
                        display="model.onnx", pushed_by="test", progress=steps.append)
    assert rec.ref == "pedssd:1" and rec.format == "tf_ssd" and rec.sha256 == hashlib.sha256(
        (PEDSSD / "model.onnx").read_bytes()).hexdigest()
    assert any("probe" in s for s in steps)
    det = Detector.from_folder(registry.store.folder("pedssd:1"))
    assert (det.name, det.version, det.input_size) == ("pedssd", "1", (300, 300))
    assert det.detect([np.zeros((240, 320, 3), np.uint8)]) == [[]]
    meta = registry.store.meta("pedssd:1")
    assert meta["probe"]["outputs"]["detection_boxes:0"]["shape"] == [2, 100, 4]
    assert meta["pushed_by"] == "test" and meta["licence"].startswith("MIT")
    assert not (registry.store.root / "tmp").exists()
    # the next push of the same name without a version gets the next number
    with pytest.raises(PushRefused, match="input size is dynamic.*--input-size"):  # the graph takes any size
        registry.push(PEDSSD / "model.onnx", PushOptions(name="pedssd", format="tf_ssd", classes=["background", "person"]),
                      display="model.onnx")
    rec2 = registry.push(PEDSSD / "model.onnx", PushOptions(name="pedssd", format="tf_ssd", input_width=320,
                                                            input_height=320, classes=["background", "person"]),
                         display="model.onnx")
    assert rec2.ref == "pedssd:2" and (rec2.input_width, rec2.input_height) == (320, 320)
    assert registry.store.spec("pedssd:2")["input"]["layout"] == "NHWC"  # read off the graph's [?, ?, ?, 3]
    assert registry.store.spec("pedssd:2")["class_map"] == {"background": "background", "person": "person"}


def test_broken_onnx_is_refused(registry, tmp_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes((PEDSSD / "model.onnx").read_bytes()[:1_000_000])
    _refused(registry, truncated, "bad_onnx", "truncated", name="x", format="tf_ssd")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(bytes(range(256)) * 10)
    _refused(registry, garbage, "bad_onnx", "not an ONNX model", name="x", format="tf_ssd")
    no_graph = tmp_path / "no-graph.onnx"
    no_graph.write_bytes(b"\x08\x07\x12\x07tf2onnx")  # ir_version and producer_name only
    _refused(registry, no_graph, "bad_onnx", "no graph", name="x", format="tf_ssd")
    # a well-formed ModelProto ONNX Runtime cannot load (an operator that does not exist)
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["images"], ["out"], domain="nowhere.example")], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 8, 8])])
    bad_op = tmp_path / "bad-op.onnx"
    bad_op.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                               helper.make_opsetid("nowhere.example", 1)]).SerializeToString())
    err = _refused(registry, bad_op, "load_failed", "ONNX Runtime cannot load it", name="x", format="yolov8",
                   classes=["a"])
    assert str(tmp_path / "store") not in str(err)  # the staging folder is not named: the pushed file is


def test_a_pickle_is_refused_without_being_loaded(registry, tmp_path, nothing_loads):
    marker = tmp_path / "unpickled"
    _Boom.marker = str(marker)
    evil = tmp_path / "weights.pt"
    evil.write_bytes(pickle.dumps(_Boom(), protocol=4))
    _refused(registry, evil, "not_onnx", "Python pickle", name="x", format="yolov8")
    evil.write_bytes(pickle.dumps(_Boom(), protocol=0))  # text pickle: no magic, refused as not a ModelProto
    _refused(registry, evil, "bad_onnx", "not an ONNX model", name="x", format="yolov8")
    assert not marker.exists()


@pytest.mark.parametrize("members,kind", [
    ({"archive/data.pkl": b"\x80\x02}q\x00.", "archive/version": b"3"}, "PyTorch checkpoint"),
    ({"archive/constants.pkl": b"\x80\x02).", "archive/code/__torch__/m.py": b"x = 1"}, "TorchScript"),
    ({"config.json": b"{}", "metadata.json": b"{}", "model.weights.h5": b""}, "Keras"),
])
def test_zip_archives_are_refused_without_being_loaded(registry, tmp_path, nothing_loads, members, kind):
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    err = _refused(registry, path, "not_onnx", kind, name="x", format="yolov8")
    assert "Export the model to ONNX" in str(err)


@pytest.mark.parametrize("head,kind", [
    (len(b'{"a":{}}').to_bytes(8, "little") + b'{"a":{}}' + b"\0" * 64, "safetensors"),
    (b"\x89HDF\r\n\x1a\n" + b"\0" * 64, "HDF5"),
    (b"\x93NUMPY\x01\x00" + b"\0" * 64, "NumPy"),
    (b"\x1c\0\0\0TFL3" + b"\0" * 64, "TensorFlow Lite"),
    (b"\x1f\x8b\x08\x00" + b"\0" * 64, "gzip"),
])
def test_other_model_formats_are_named_and_refused(registry, tmp_path, nothing_loads, head, kind):
    path = tmp_path / "model.bin"
    path.write_bytes(head)
    _refused(registry, path, "not_onnx", kind, name="x", format="yolov8")


def test_size_limit(registry, tmp_path):
    small = Registry(RegistrySettings(model_store=registry.store.root, max_model_mb=5), routing=MemoryRouting())
    err = _refused(small, PEDSSD / "model.onnx", "too_large", "the limit is 5 MB", name="x", format="tf_ssd")
    assert "AIMASS_MAX_MODEL_MB" in str(err)
    # a stream (an upload) is cut off at the limit, not read to its end
    stream = io.BytesIO((PEDSSD / "model.onnx").read_bytes())
    with pytest.raises(PushRefused, match="more than 5 MB; the limit is 5 MB"):
        small.push(stream, PushOptions(name="x", format="tf_ssd"), display="upload")
    assert stream.tell() <= 5 * 1024 * 1024 + (1 << 20) and _empty(small.store)


def test_checksum_mismatch(registry):
    _refused(registry, PEDSSD / "model.onnx", "checksum", "--sha256 says 0000", name="x", format="tf_ssd",
             sha256="0" * 64)
    spec = read_spec_file(PEDSSD / "model.yaml")
    spec["sha256"] = "f" * 64
    _refused(registry, PEDSSD / "model.onnx", "checksum", "the sha256 in --spec", spec=spec)


def test_wrong_format_for_a_real_model_is_refused_with_the_probe_s_reason(registry):
    """NanoDet's first score output declared as a YOLOv8 head: the graph loads, but a real run's
    output is [N, 2704, 80], not [N, 4+80, A]."""
    spec = read_spec_file(NANODET / "model.yaml")
    spec.pop("outputs")
    err = _refused(registry, NANODET / "model.onnx", "probe_failed", "format 'yolov8' expects output 'Identity:0'",
                   spec=spec, format="yolov8", extra={"outputs": {"output": "Identity:0"}})
    assert "2704, 80]" in str(err)


def test_wrong_input_declared_is_refused_naming_the_fix(registry):
    _refused(registry, PEDSSD / "model.onnx", "probe_failed", "Set input.layout: NCHW", name="ped", format="yolov8",
             classes=["background", "person"], input_width=300, input_height=300)


def test_missing_facts_are_asked_for(registry):
    _refused(registry, PEDSSD / "model.onnx", "bad_spec", "no format given", name="ped")
    _refused(registry, PEDSSD / "model.onnx", "bad_spec", "no class names", name="ped", format="tf_ssd",
             input_width=300, input_height=300)
    _refused(registry, PEDSSD / "model.onnx", "bad_spec", "has no adapter", name="ped", format="caffe")
    _refused(registry, PEDSSD / "model.onnx", "bad_name", "not allowed", name="ped:1", format="tf_ssd")
    with pytest.raises(PushRefused, match="no model name") as exc:
        registry.push(PEDSSD / "model.onnx", PushOptions(format="tf_ssd"), display="x")
    assert exc.value.reason == "bad_spec"


def test_a_version_that_exists_is_refused_before_any_work(registry, monkeypatch):
    registry.push(PEDSSD / "model.onnx", PushOptions(spec=read_spec_file(PEDSSD / "model.yaml")), display="m")
    import aimass_registry.service as service
    monkeypatch.setattr(service, "stage_copy", lambda *a, **k: pytest.fail("copied a version that exists"))
    with pytest.raises(PushRefused, match="already in the store") as exc:
        registry.push(PEDSSD / "model.onnx", PushOptions(spec=read_spec_file(PEDSSD / "model.yaml")), display="m")
    assert exc.value.reason == "exists"


def _ultralytics_like(path: Path, classes: list[str], imgsz=(48, 64)) -> None:
    """A YOLOv8-shaped graph with a dynamic input size and Ultralytics' metadata: names and imgsz."""
    anchors = 10
    out = np.zeros((1, 4 + len(classes), anchors), np.float32)
    out[0, :4, 0] = (32, 24, 16, 12)
    out[0, 4, 0] = 0.9
    nodes = [helper.make_node("Shape", ["images"], ["batch"], start=0, end=1),
             helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(out, "c")),
             helper.make_node("Constant", [], ["rest"], value=numpy_helper.from_array(
                 np.array(out.shape[1:], np.int64), "rest")),
             helper.make_node("Concat", ["batch", "rest"], ["shape"], axis=0),
             helper.make_node("Expand", ["c", "shape"], ["output0"])]
    graph = helper.make_graph(nodes, "yolo", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                             ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 4 + len(classes), anchors])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"names": repr(dict(enumerate(classes))), "imgsz": repr(list(imgsz)),
                                   "task": "detect", "stride": "32"})
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def test_an_ultralytics_export_needs_only_name_and_format(registry, tmp_path):
    path = tmp_path / "yolo.onnx"
    _ultralytics_like(path, ["person", "car"])
    rec = registry.push(path, PushOptions(name="yolo", format="yolov8", class_map={"car": "vehicle", "person": "person"}),
                        display=str(path))
    spec = registry.store.spec(rec.ref)
    assert spec["classes"] == ["person", "car"]  # from the 'names' metadata
    assert (spec["input"]["name"], spec["input"]["width"], spec["input"]["height"]) == ("images", 64, 48)  # imgsz [h, w]
    assert spec["input"]["resize"] == "letterbox" and spec["input"]["std"] == [255, 255, 255]
    det = Detector.from_folder(registry.store.folder(rec.ref))
    assert [o.label for o in det.detect([np.zeros((48, 64, 3), np.uint8)])[0]] == ["person"]


def test_an_ultralytics_segmentation_model_is_refused(registry, tmp_path):
    path = tmp_path / "seg.onnx"
    _ultralytics_like(path, ["person"])
    model = onnx.load(str(path))
    helper.set_model_props(model, {"names": "{0: 'person'}", "task": "segment"})
    path.write_bytes(model.SerializeToString())
    _refused(registry, path, "bad_spec", "'segment' model", name="seg", format="yolov8")


def test_option_parsers():
    assert parse_size("640x480") == (640, 480) and parse_size("416") == (416, 416)
    assert parse_class_map("car=vehicle, person:person") == {"car": "vehicle", "person": "person"}
    with pytest.raises(ValueError):
        parse_size("big")
    opts = PushOptions.from_mapping({"name": "m", "input_size": "320x240", "classes": "a,b", "mean": "1,2,3",
                                     "extra": {"reg_max": 7}}, "format: nanodet\n")
    assert (opts.input_width, opts.input_height, opts.classes, opts.mean) == (320, 240, ["a", "b"], [1.0, 2.0, 3.0])
    assert opts.spec == {"format": "nanodet"} and opts.extra == {"reg_max": 7}
    with pytest.raises(PushRefused, match="unknown push parameters"):
        PushOptions.from_mapping({"nmae": "typo"})


def test_a_spec_file_that_is_not_yaml_is_refused(tmp_path):
    bad = tmp_path / "model.yaml"
    bad.write_text("input: [unclosed")
    with pytest.raises(PushRefused, match="not valid YAML") as exc:
        read_spec_file(bad)
    assert exc.value.reason == "bad_spec"
