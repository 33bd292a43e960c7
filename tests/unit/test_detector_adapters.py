"""The yolov8 and rtdetr adapters, letterboxing, output validation (``Adapter.check_outputs``) and
``Detector.probe``: tiny ONNX graphs built here emit known tensors, loaded through model.yaml folders
like any uploaded model, so the whole path (model.yaml, sha256, session, prepare, decode) runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from aimass_detector.adapters import ADAPTERS, adapter_for
from aimass_detector.engine import Detector
from aimass_detector.model import InputSpec, ModelError, ModelSpec
from aimass_detector.preprocess import boxes_to_frame, letterbox_geometry, pack_nchw, pack_nhwc_uint8

MODELS = Path(__file__).resolve().parents[2] / "models"
CLASSES = ["person", "car", "cat"]
CLASS_MAP = {"person": "person", "car": "vehicle"}  # cat is dropped
SIZE = 64  # model input, square unless a test says otherwise


# ---- building model folders ---------------------------------------------------------------------

def _graph(outputs: dict[str, np.ndarray], *, input_shape=("N", 3, SIZE, SIZE), input_type=TensorProto.FLOAT,
           per_batch: bool = True, extra_nodes=(), extra_inputs=(), extra_outputs=()) -> onnx.ModelProto:
    """A graph whose outputs are the given constants, each [1, ...], repeated along the batch of
    the image input (``per_batch``), or passed through as they are (a fixed batch of 1); plus
    ``extra_nodes`` computing float ``extra_outputs`` from ``extra_inputs`` (name, type, shape)."""
    nodes = [helper.make_node("Shape", ["images"], ["batch"], start=0, end=1)]
    outs = []
    for name, value in outputs.items():
        const, rest, target = f"{name}_const", f"{name}_rest", f"{name}_shape"
        nodes.append(helper.make_node("Constant", [], [const], value=numpy_helper.from_array(value, const)))
        if per_batch:
            nodes.append(helper.make_node("Constant", [], [rest], value=numpy_helper.from_array(
                np.array(value.shape[1:], np.int64), rest)))
            nodes.append(helper.make_node("Concat", ["batch", rest], [target], axis=0))
            nodes.append(helper.make_node("Expand", [const, target], [name]))
        else:
            nodes.append(helper.make_node("Identity", [const], [name]))
        elem = helper.np_dtype_to_tensor_dtype(value.dtype)
        outs.append(helper.make_tensor_value_info(name, elem, ["N", *value.shape[1:]] if per_batch else value.shape))
    nodes.extend(extra_nodes)
    inputs = [helper.make_tensor_value_info("images", input_type, list(input_shape))]
    inputs += [helper.make_tensor_value_info(n, e, list(s)) for n, e, s in extra_inputs]
    outs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", "Q", 4]) for n in extra_outputs]
    graph = helper.make_graph(nodes, "test", inputs, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _folder(root: Path, name: str, model: onnx.ModelProto, fmt: str, **yaml_keys) -> Path:
    folder = root / name
    folder.mkdir()
    data = model.SerializeToString()
    (folder / "model.onnx").write_bytes(data)
    spec = {
        "name": name, "version": "1", "format": fmt, "sha256": hashlib.sha256(data).hexdigest(),
        "input": {"name": "images", "width": SIZE, "height": SIZE, "layout": "NCHW", "dtype": "float32",
                  "channels": "RGB", "mean": [0, 0, 0], "std": [255, 255, 255]},
        "classes": CLASSES, "class_map": CLASS_MAP, "score_threshold": 0.4, "nms_iou": 0.5,
    }
    for key, value in yaml_keys.items():
        if key == "input":
            spec["input"].update(value)
        else:
            spec[key] = value
    (folder / "model.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def _frames(*sizes: tuple[int, int]) -> list[np.ndarray]:
    return [np.full((h, w, 3), 100, np.uint8) for w, h in sizes]


def _objs(res) -> list[tuple]:
    return [(o.label, o.class_id, round(o.score, 4), tuple(round(v, 4) for v in (o.x1, o.y1, o.x2, o.y2)))
            for o in res]


# ---- YOLOv8 --------------------------------------------------------------------------------------

def _yolo_output(n_classes: int = 3, anchors: int = 8) -> np.ndarray:
    """[1, 4+C, A], Ultralytics' layout: (cx, cy, w, h) in input pixels, then sigmoid scores."""
    out = np.zeros((1, 4 + n_classes, anchors), np.float32)
    out[0, :4, :] = np.array([32, 32, 8, 8], np.float32)[:, None]  # a default box for every anchor

    def put(a, box, scores):
        out[0, :4, a] = box
        out[0, 4:4 + len(scores), a] = scores

    put(2, (16, 32, 16, 16), (0.9, 0.1, 0.0))    # person: (8, 24, 24, 40)
    put(5, (48, 40, 24, 16), (0.0, 0.8, 0.2))    # car -> vehicle: (36, 32, 60, 48)
    put(6, (17, 32, 16, 16), (0.7, 0.0, 0.0))    # person overlapping anchor 2 (IoU 0.88): suppressed
    put(7, (40, 12, 10, 10), (0.5, 0.0, 0.95))   # best class cat, which is unmapped: dropped
    put(3, (50, 50, 4, 4), (0.3, 0.0, 0.0))      # under the threshold
    return out


PERSON = (8 / 64, 24 / 64, 24 / 64, 40 / 64)
CAR = (36 / 64, 32 / 64, 60 / 64, 48 / 64)


@pytest.fixture(scope="module")
def yolo_dir(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.mktemp("yolo"), "yolo", _graph({"output0": _yolo_output()}), "yolov8")


def test_yolov8_decodes_known_boxes_through_onnx_runtime(yolo_dir):
    det = Detector.from_folder(yolo_dir, threads=1)
    a, b = det.detect(_frames((64, 64), (200, 100)))  # stretch: the frame's shape does not matter
    expected = [("person", 0, 0.9, PERSON), ("vehicle", 1, 0.8, CAR)]
    assert _objs(a) == _objs(b) == [(l, c, s, tuple(round(v, 4) for v in box)) for l, c, s, box in expected]


def test_yolov8_transposed_output_auto_and_explicit(tmp_path):
    out = _yolo_output().transpose(0, 2, 1).copy()  # [1, A, 4+C]
    for name, keys in (("auto", {}), ("explicit", {"output_layout": "anchors_first"})):
        folder = _folder(tmp_path, name, _graph({"preds": out}), "yolov8", outputs={"output": "preds"}, **keys)
        [objs] = Detector.from_folder(folder, threads=1).detect(_frames((64, 64)))
        assert [(o.label, round(o.score, 4)) for o in objs] == [("person", 0.9), ("vehicle", 0.8)]


def test_yolov8_letterbox_maps_boxes_back_to_each_frame(tmp_path):
    folder = _folder(tmp_path, "lb", _graph({"output0": _yolo_output()}), "yolov8", input={"resize": "letterbox"})
    det = Detector.from_folder(folder, threads=1)
    square, wide = det.detect(_frames((64, 64), (128, 64)))
    assert [o.label for o in square] == ["person", "vehicle"]
    assert (square[0].x1, square[0].y1, square[0].x2, square[0].y2) == pytest.approx(PERSON)
    # 128x64 -> scaled to 64x32, padded 16 rows above and below: y maps as (y - 16) / 32.
    person = wide[0]
    assert (person.x1, person.y1, person.x2, person.y2) == pytest.approx((8 / 64, 8 / 32, 24 / 64, 24 / 32))
    car = wide[1]
    assert (car.x1, car.y1, car.x2, car.y2) == pytest.approx((36 / 64, 16 / 32, 60 / 64, 1.0))  # 32/32 clipped


def test_yolov8_decode_per_image_caps_and_thresholds():
    spec = _spec("yolov8", max_detections=2)
    ad = adapter_for(spec)
    out = np.zeros((2, 7, 6), np.float32)
    out[:, :4, :] = np.array([[10, 10, 8, 8], [30, 10, 8, 8], [50, 10, 8, 8], [10, 40, 8, 8], [30, 40, 8, 8],
                              [50, 40, 8, 8]], np.float32).T  # six disjoint boxes
    out[0, 4, :] = (0.5, 0.6, 0.7, 0.8, 0.0, 0.0)  # image 0: four people, capped at the best two
    out[1, 5, 4] = 0.45                              # image 1: one car
    a, b = ad.decode({"output0": out}, [(64, 64), (64, 64)])
    assert [(o.label, round(o.score, 2)) for o in a] == [("person", 0.8), ("person", 0.7)]
    assert [(o.label, o.class_id, round(o.score, 2)) for o in b] == [("vehicle", 1, 0.45)]
    assert (b[0].x1, b[0].y1, b[0].x2, b[0].y2) == pytest.approx((26 / 64, 36 / 64, 34 / 64, 44 / 64))
    assert ad.decode({"output0": np.zeros((3, 7, 6), np.float32)}, [(9, 9)] * 3) == [[], [], []]


def test_yolov8_model_yaml_errors():
    with pytest.raises(ModelError, match="output_layout 'sideways'"):
        adapter_for(_spec("yolov8", extra={"output_layout": "sideways"}))
    with pytest.raises(ModelError, match="float32 NCHW"):
        adapter_for(_spec("yolov8", input=InputSpec("images", 64, 64, "NHWC", "uint8", "RGB")))


# ---- RT-DETR -------------------------------------------------------------------------------------

def _rtdetr_tensors() -> tuple[np.ndarray, np.ndarray]:
    """boxes [1, 5, 4] cxcywh normalised and scores [1, 5, 3] sigmoid."""
    boxes = np.array([[[0.25, 0.5, 0.2, 0.4], [0.7, 0.7, 0.2, 0.2], [0.5, 0.2, 0.1, 0.1],
                       [0.9, 0.9, 0.1, 0.1], [0.26, 0.5, 0.2, 0.4]]], np.float32)
    scores = np.array([[[0.9, 0.1, 0.0], [0.2, 0.6, 0.0], [0.5, 0.0, 0.99], [0.2, 0.1, 0.0],
                        [0.85, 0.0, 0.0]]], np.float32)
    return boxes, scores


# No NMS: the overlapping person of query 4 stays; the cat (query 2) goes though its person score
# is over the threshold (best class per query); query 3 is under it.
RTDETR_EXPECTED = [("person", 0, 0.9, (0.15, 0.3, 0.35, 0.7)), ("person", 0, 0.85, (0.16, 0.3, 0.36, 0.7)),
                   ("vehicle", 1, 0.6, (0.6, 0.6, 0.8, 0.8))]


def test_rtdetr_decodes_known_boxes_through_onnx_runtime(tmp_path):
    boxes, scores = _rtdetr_tensors()
    folder = _folder(tmp_path, "rtdetr", _graph({"pred_boxes": boxes, "pred_logits": scores}), "rtdetr",
                     outputs={"boxes": "pred_boxes", "scores": "pred_logits"}, input={"channels": "RGB"})
    det = Detector.from_folder(folder, threads=1)
    a, b = det.detect(_frames((64, 64), (640, 360)))
    assert _objs(a) == _objs(b) == RTDETR_EXPECTED


def test_rtdetr_logits_and_combined_output(tmp_path):
    boxes, scores = _rtdetr_tensors()
    logits = np.log(np.clip(scores, 1e-6, 1 - 1e-6) / (1 - np.clip(scores, 1e-6, 1 - 1e-6))).astype(np.float32)
    folder = _folder(tmp_path, "logits", _graph({"boxes": boxes, "scores": logits}), "rtdetr", scores="logits")
    [objs] = Detector.from_folder(folder, threads=1).detect(_frames((64, 64)))
    assert _objs(objs) == RTDETR_EXPECTED
    # Ultralytics' RT-DETR export: one [N, Q, 4+C] tensor, named for both boxes and scores.
    both = np.concatenate([boxes, scores], axis=2)
    folder = _folder(tmp_path, "combined", _graph({"output0": both}), "rtdetr",
                     outputs={"boxes": "output0", "scores": "output0"})
    [objs] = Detector.from_folder(folder, threads=1).detect(_frames((64, 64)))
    assert _objs(objs) == RTDETR_EXPECTED


def test_rtdetr_labels_xyxy_pixels_and_size_input(tmp_path):
    # As lyuwenyu's RT-DETR exports with their post-processor: labels, xyxy boxes scaled by the
    # orig_target_sizes input (width, height), one score per query. The graph multiplies its
    # normalised boxes by the fed size, so a wrong feed (or order) shows in the boxes.
    w, h = 64, 48
    norm = np.array([[[0.15, 0.3, 0.35, 0.7], [0.6, 0.6, 0.8, 0.8], [0.1, 0.1, 0.2, 0.2]]], np.float32)
    labels = np.array([[0, 1, 2]], np.int64)
    scores = np.array([[0.9, 0.6, 0.95]], np.float32)
    extra = [
        helper.make_node("Cast", ["orig_target_sizes"], ["sizes_f"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["sizes_f", "sizes_f"], ["sizes4"], axis=1),
        helper.make_node("Constant", [], ["axes1"], value=numpy_helper.from_array(np.array([1], np.int64), "axes1")),
        helper.make_node("Unsqueeze", ["sizes4", "axes1"], ["sizes4u"]),
        helper.make_node("Constant", [], ["norm"], value=numpy_helper.from_array(norm, "norm")),
        helper.make_node("Mul", ["norm", "sizes4u"], ["boxes"]),
    ]
    model = _graph({"labels": labels, "scores": scores}, input_shape=("N", 3, h, w), extra_nodes=extra,
                   extra_inputs=[("orig_target_sizes", TensorProto.INT64, ["N", 2])], extra_outputs=["boxes"])
    folder = _folder(tmp_path, "lyu", model, "rtdetr", input={"width": w, "height": h},
                     outputs={"boxes": "boxes", "scores": "scores", "labels": "labels"},
                     box_format="xyxy", box_units="pixels", size_input="orig_target_sizes")
    det = Detector.from_folder(folder, threads=1)
    a, b = det.detect(_frames((64, 48), (32, 32)))
    assert _objs(a) == _objs(b) == [("person", 0, 0.9, (0.15, 0.3, 0.35, 0.7)), ("vehicle", 1, 0.6, (0.6, 0.6, 0.8, 0.8))]
    assert det.probe(batch=2, runs=1)["inputs"]["orig_target_sizes"] == {"shape": [2, 2], "dtype": "int64"}
    # Without size_input the graph's second input is not fed: refused at load, naming it.
    (folder / "model.yaml").write_text((folder / "model.yaml").read_text().replace(
        "size_input: orig_target_sizes", ""))
    with pytest.raises(ModelError, match=r"also needs inputs \['orig_target_sizes'\]"):
        Detector.from_folder(folder, threads=1)


def test_rtdetr_decode_caps_at_max_detections_best_first():
    ad = adapter_for(_spec("rtdetr", max_detections=3))
    q = 10
    boxes = np.tile(np.array([0.5, 0.5, 0.2, 0.2], np.float32), (1, q, 1))
    scores = np.zeros((1, q, 3), np.float32)
    scores[0, :, 0] = np.linspace(0.5, 0.95, q)
    [objs] = ad.decode({"boxes": boxes, "scores": scores}, [(64, 64)])
    assert [round(o.score, 2) for o in objs] == [0.95, 0.9, 0.85]


def test_rtdetr_model_yaml_errors():
    with pytest.raises(ModelError, match="box_format 'yxyx'"):
        adapter_for(_spec("rtdetr", extra={"box_format": "yxyx"}))
    with pytest.raises(ModelError, match="scores"):
        adapter_for(_spec("rtdetr", extra={"scores": "softmax"}))
    with pytest.raises(ModelError, match="keys boxes, scores"):
        adapter_for(_spec("rtdetr", extra={"outputs": {"bbox": "x"}}))


# ---- probe() and check_outputs -------------------------------------------------------------------

def test_probe_reports_facts_for_good_graphs(yolo_dir):
    det = Detector.from_folder(yolo_dir, threads=1)
    facts = det.probe(batch=3, runs=2)
    assert facts["format"] == "yolov8" and facts["batch"] == 3
    assert facts["inputs"] == {"images": {"shape": [3, 3, SIZE, SIZE], "dtype": "float32"}}
    assert facts["outputs"] == {"output0": {"shape": [3, 7, 8], "dtype": "float32"}}
    assert facts["detections"] == [2, 2, 2]
    assert facts["providers"] == det.providers and "CPUExecutionProvider" in facts["providers"]
    assert 0 < facts["seconds_per_run"] < 5 and facts["seconds_per_frame"] == pytest.approx(facts["seconds_per_run"] / 3)


def test_probe_refuses_yolo_with_wrong_class_count(tmp_path):
    # model.yaml lists 3 classes (4+3 = 7 channels); the export has 80 (84 channels).
    folder = _folder(tmp_path, "coco", _graph({"output0": np.zeros((1, 84, 100), np.float32)}), "yolov8")
    det = Detector.from_folder(folder, threads=1)  # loads: output shapes are only known after a run
    with pytest.raises(ModelError) as info:
        det.probe()
    msg = str(info.value)
    assert "expects output 'output0' shaped [2, 7, A] or [2, A, 7]" in msg and "float32[2, 84, 100]" in msg
    assert "80 classes" in msg and "Fix 'classes'" in msg and str(folder) in msg
    with pytest.raises(ModelError, match="80 classes"):  # the worker's warmup refuses it too
        det.warmup()


def test_probe_refuses_yolov5_style_and_ambiguous_layouts(tmp_path):
    folder = _folder(tmp_path, "v5", _graph({"output0": np.zeros((1, 25200, 8), np.float32)}), "yolov8")
    with pytest.raises(ModelError, match="YOLOv5/YOLOv7"):
        Detector.from_folder(folder, threads=1).probe(runs=1)
    square = _yolo_output()[:, :, :7].copy()  # A == 4+C == 7: which axis is which?
    folder = _folder(tmp_path, "square", _graph({"output0": square}), "yolov8")
    with pytest.raises(ModelError, match="output_layout: channels_first"):
        Detector.from_folder(folder, threads=1).probe(runs=1)
    folder = _folder(tmp_path, "square2", _graph({"output0": square}), "yolov8", output_layout="channels_first")
    assert Detector.from_folder(folder, threads=1).probe(runs=1)["detections"] == [2, 2]


def test_probe_refuses_fixed_batch_outputs_and_inputs(tmp_path):
    # Outputs that ignore the batch (a constant [1, ...]): one row for two frames.
    folder = _folder(tmp_path, "b1", _graph({"output0": _yolo_output()}, per_batch=False), "yolov8")
    with pytest.raises(ModelError, match=r"first dimension 2 for a batch of 2.*dynamic=True"):
        Detector.from_folder(folder, threads=1).probe(batch=2, runs=1)
    assert Detector.from_folder(folder, threads=1).probe(batch=1, runs=1)["detections"] == [2]
    # An input with a fixed batch of 1: ONNX Runtime refuses the run; the error says why.
    folder = _folder(tmp_path, "in1", _graph({"output0": _yolo_output()}, input_shape=(1, 3, SIZE, SIZE)), "yolov8")
    with pytest.raises(ModelError, match="fixed batch of 1"):
        Detector.from_folder(folder, threads=1).probe(batch=2, runs=1)


def test_a_worker_refuses_at_load_a_model_that_cannot_take_its_largest_batch(tmp_path):
    from aimass_detector.serving import ModelSet

    folder = _folder(tmp_path, "in1", _graph({"output0": _yolo_output()}, input_shape=(1, 3, SIZE, SIZE)), "yolov8")
    load = lambda f: Detector.from_folder(f, threads=1)  # noqa: E731
    assert ModelSet(lambda model: folder, load).load("in1:1")[0].name == "in1"  # batch 1 only: loads
    with pytest.raises(ModelError, match=r"(?s)batch of 4 .*fixed batch of 1"):
        ModelSet(lambda model: folder, load, warm_batches=(1, 4)).load("in1:1")


def test_probe_refuses_rtdetr_with_wrong_class_count(tmp_path):
    boxes, _ = _rtdetr_tensors()
    folder = _folder(tmp_path, "r4", _graph({"boxes": boxes, "scores": np.zeros((1, 5, 4), np.float32)}), "rtdetr")
    with pytest.raises(ModelError) as info:
        Detector.from_folder(folder, threads=1).probe(runs=1)
    msg = str(info.value)
    assert "expects output 'scores' shaped [2, 5, 3]" in msg and "float32[2, 5, 4]" in msg
    assert "lists 3 classes" in msg and "the model scores 4" in msg
    # boxes and scores swapped in model.yaml
    folder = _folder(tmp_path, "swap", _graph({"boxes": boxes, "scores": _rtdetr_tensors()[1]}), "rtdetr",
                     outputs={"boxes": "scores", "scores": "boxes"})
    with pytest.raises(ModelError, match=r"expects output 'scores' shaped \[2, Q, 4\]"):
        Detector.from_folder(folder, threads=1).probe(runs=1)


def test_check_session_input_dtype_rank_and_fixed_size(tmp_path):
    model = _graph({"output0": _yolo_output()}, input_shape=("N", 3, 32, 32))
    with pytest.raises(ModelError, match="fixed 32x32 input.*width: 32"):
        Detector.from_folder(_folder(tmp_path, "size", model, "yolov8"))
    model = _graph({"output0": _yolo_output()}, input_shape=("N", SIZE, SIZE, 3))
    with pytest.raises(ModelError, match="set input.layout: NHWC"):
        Detector.from_folder(_folder(tmp_path, "nhwc", model, "yolov8"))
    model = _graph({"output0": _yolo_output()}, input_shape=("N", 3, SIZE))
    with pytest.raises(ModelError, match="rank 3"):
        Detector.from_folder(_folder(tmp_path, "rank", model, "yolov8"))
    ssd = {"detection_boxes:0": np.zeros((1, 10, 4), np.float32), "detection_scores:0": np.zeros((1, 10), np.float32),
           "detection_classes:0": np.zeros((1, 10), np.float32), "num_detections:0": np.zeros((1,), np.float32)}
    model = _graph(ssd, input_shape=("N", SIZE, SIZE, 3))  # float input, model.yaml says uint8
    folder = _folder(tmp_path, "ssd", model, "tf_ssd", input={"name": "images", "layout": "NHWC", "dtype": "uint8"},
                     classes=["background", "person"], class_map={"person": "person"})
    with pytest.raises(ModelError, match=r"input 'images' is tensor\(float\).*says dtype uint8"):
        Detector.from_folder(folder)


def test_nanodet_and_ssd_check_outputs_say_what_to_fix():
    nano = adapter_for(_spec("nanodet", extra={"outputs": [{"stride": s, "scores": f"s{s}", "boxes": f"b{s}"}
                                                           for s in (8, 16, 32)]}))

    def outs(bins=44, n_cls=3, swap=False):
        o = {}
        for s in (8, 16, 32):
            a = (SIZE // s) ** 2
            o[f"s{s}"], o[f"b{s}"] = np.zeros((2, a, n_cls), np.float32), np.zeros((2, a, bins), np.float32)
            if swap:
                o[f"s{s}"], o[f"b{s}"] = o[f"b{s}"], o[f"s{s}"]
        return o

    nano.check_outputs(outs(), 2)
    with pytest.raises(ModelError, match="set reg_max: 7"):
        nano.check_outputs(outs(bins=32), 2)
    with pytest.raises(ModelError, match="lists 3 classes but the model scores 80"):
        nano.check_outputs(outs(n_cls=80), 2)
    with pytest.raises(ModelError, match="swap 'scores' and 'boxes'"):
        nano.check_outputs(outs(swap=True), 2)
    with pytest.raises(ModelError, match=r"a run gave no outputs \['s8'\]"):
        nano.check_outputs({k: v for k, v in outs().items() if k != "s8"}, 2)
    ssd = adapter_for(_spec("tf_ssd", classes=("background", "person"), class_map={"person": "person"}, extra={}))
    good = {"detection_boxes:0": np.zeros((2, 100, 4), np.float32), "detection_scores:0": np.zeros((2, 100), np.float32),
            "detection_classes:0": np.zeros((2, 100), np.float32), "num_detections:0": np.zeros((2,), np.float32)}
    ssd.check_outputs(good, 2)
    with pytest.raises(ModelError, match=r"'detection_scores:0' shaped \[2, 100\]"):
        ssd.check_outputs({**good, "detection_scores:0": np.zeros((2, 50), np.float32)}, 2)
    with pytest.raises(ModelError, match="one row per frame"):
        ssd.check_outputs(good, 3)


def test_real_models_pass_probe():
    for folder, fmt in (("nanodet-g-416", "nanodet"), ("pedssd", "tf_ssd")):
        facts = Detector.from_folder(MODELS / folder, threads=2).probe(batch=2, runs=1)
        assert facts["format"] == fmt and len(facts["detections"]) == 2 and facts["seconds_per_run"] > 0


def test_all_formats_registered():
    assert set(ADAPTERS) == {"nanodet", "tf_ssd", "yolov8", "rtdetr"}


# ---- letterbox -----------------------------------------------------------------------------------

def test_letterbox_geometry_and_packing():
    assert letterbox_geometry(128, 64, 64, 64) == (64, 32, 0, 16)
    assert letterbox_geometry(64, 128, 64, 64) == (32, 64, 16, 0)
    assert letterbox_geometry(640, 480, 640, 640) == (640, 480, 0, 80)
    assert letterbox_geometry(1920, 1080, 640, 640) == (640, 360, 0, 140)
    img = np.full((2, 4, 3), 255, np.uint8)  # 4 wide, 2 high -> rows 1..2 of a 4x4 input
    out = pack_nchw([img], 4, 4, mean=(0, 0, 0), std=(255, 255, 255), resize_mode="letterbox")
    np.testing.assert_allclose(out[0, :, 1:3], 1.0)
    np.testing.assert_allclose(out[0, :, [0, 3]], 114 / 255, rtol=1e-6)
    u8 = pack_nhwc_uint8([img], 4, 4, resize_mode="letterbox")
    assert (u8[0, 1:3] == 255).all() and (u8[0, [0, 3]] == 114).all()


def test_boxes_to_frame_inverts_the_letterbox():
    # A box drawn on each frame, pushed through the letterbox geometry, comes back where it was.
    sizes = [(1920, 1080), (480, 640), (640, 640)]
    frame_boxes = np.array([[0.1, 0.2, 0.5, 0.9], [0.3, 0.0, 1.0, 0.4], [0.25, 0.25, 0.75, 0.75]])
    input_px = []
    for (w, h), box in zip(sizes, frame_boxes):
        nw, nh, left, top = letterbox_geometry(w, h, 640, 640)
        input_px.append(box * [nw, nh, nw, nh] + [left, top, left, top])
    back = boxes_to_frame(np.array(input_px), np.arange(3), sizes, 640, 640, "letterbox")
    np.testing.assert_allclose(back, frame_boxes, atol=1e-9)
    np.testing.assert_allclose(boxes_to_frame(np.array([[32, 16, 64, 48]]), np.zeros(1, int), sizes, 64, 64),
                               [[0.5, 0.25, 1.0, 0.75]])


def _spec(fmt: str, **over) -> ModelSpec:
    base = dict(
        folder=Path("/nowhere"), name="t", version="1", format=fmt, onnx_path=Path("/nowhere/m.onnx"),
        sha256="0" * 64, licence="",
        input=InputSpec("images", SIZE, SIZE, "NCHW", "float32", "RGB", std=(255.0, 255.0, 255.0)),
        classes=tuple(CLASSES), class_map=dict(CLASS_MAP), score_threshold=0.4, nms_iou=0.5, max_detections=100,
        extra={},
    )
    base.update(over)
    return ModelSpec(**base)
