"""NanoDet decoding on hand-built outputs with known answers; the real models loading and running;
model folder errors."""

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from aimass_detector.adapters import ADAPTERS, adapter_for
from aimass_detector.adapters.nanodet import NanoDetAdapter, cell_centres, softmax_expectation
from aimass_detector.engine import Detector
from aimass_detector.model import InputSpec, ModelError, ModelSpec, choose_providers, load_spec

MODELS = Path(__file__).resolve().parents[2] / "models"
BINS = 11
HIGH = 60.0  # a logit that takes all the softmax mass from bins left at 0 (e^-60 ~ 1e-26)


def _spec(**over) -> ModelSpec:
    base = dict(
        folder=Path("/nowhere"), name="t", version="1", format="nanodet", onnx_path=Path("/nowhere/m.onnx"),
        sha256="0" * 64, licence="",
        input=InputSpec(name="in", width=64, height=64, layout="NCHW", dtype="float32", channels="BGR"),
        classes=("person", "car", "cat"), class_map={"person": "person", "car": "vehicle"},
        score_threshold=0.4, nms_iou=0.5, max_detections=100,
        extra={"outputs": [{"stride": s, "scores": f"s{s}", "boxes": f"b{s}"} for s in (8, 16, 32)]},
    )
    base.update(over)
    return ModelSpec(**base)


def _empty_outputs(n: int) -> dict[str, np.ndarray]:
    out = {}
    for s in (8, 16, 32):
        a = (64 // s) ** 2
        out[f"s{s}"] = np.zeros((n, a, 3), np.float32)
        out[f"b{s}"] = np.zeros((n, a, 4 * BINS), np.float32)
    return out


def _sides(*peaks) -> np.ndarray:
    """One cell's 44 logits; per side, the bins that share the softmax mass equally."""
    logits = np.zeros((4, BINS), np.float32)
    for side, bins in enumerate(peaks):
        logits[side, list(bins)] = HIGH
    return logits.reshape(-1)


def test_softmax_expectation_known_values():
    flat = np.zeros(BINS)
    peak = np.full(BINS, -HIGH)
    peak[3] = HIGH
    two = np.zeros(BINS)
    two[[1, 2]] = HIGH
    np.testing.assert_allclose(softmax_expectation(np.stack([flat, peak, two])), [5.0, 3.0, 1.5])


def test_cell_centres_row_major_with_half_cell_offset():
    centres, strides = cell_centres(64, 32, [16])  # 4 x 2 grid
    np.testing.assert_array_equal(centres, [[8, 8], [24, 8], [40, 8], [56, 8], [8, 24], [24, 24], [40, 24], [56, 24]])
    assert strides.tolist() == [16] * 8
    assert len(cell_centres(416, 416, [8, 16, 32])[0]) == 52 * 52 + 26 * 26 + 13 * 13


def test_decode_hand_built_outputs_gives_known_boxes():
    ad = NanoDetAdapter(_spec())
    out = _empty_outputs(2)
    # Image 0, stride 16, cell 5 = (x 1, y 1) on the 4x4 grid: centre (24, 24).
    # Sides l=1 bin, t=(0+2)/2 bins, r=2 bins, b=(1+2)/2 bins, times 16 px -> (8, 8, 56, 48).
    out["b16"][0, 5] = _sides([1], [0, 2], [2], [1, 2])
    out["s16"][0, 5] = (0.9, 0.6, 0.95)  # person 0.9, car 0.6 on the same box, cat unmapped
    # A weaker person on the neighbouring cell (centre 40, 24), IoU with the first > 0.5: suppressed.
    out["b16"][0, 6] = _sides([2], [1], [1], [1, 2])  # (8, 8, 56, 48)
    out["s16"][0, 6, 0] = 0.8
    # Below threshold: dropped.
    out["s8"][0, 0, 0] = 0.39
    # Image 1, stride 32, cell 3 = (1, 1), centre (48, 48); all sides 0.5 bin -> (32, 32, 64, 64).
    out["b32"][1, 3] = _sides([0, 1], [0, 1], [0, 1], [0, 1])
    out["s32"][1, 3, 1] = 0.7
    res = ad.decode(out, [(640, 480), (1920, 1080)])
    assert len(res) == 2
    assert [(o.label, o.class_id) for o in res[0]] == [("person", 0), ("vehicle", 1)]
    person, car = res[0]
    assert person.score == pytest.approx(0.9) and car.score == pytest.approx(0.6)
    for o in res[0]:
        assert (o.x1, o.y1, o.x2, o.y2) == pytest.approx((8 / 64, 8 / 64, 56 / 64, 48 / 64), abs=1e-9)
        assert o.track_id == -1
    [v] = res[1]
    assert (v.label, v.class_id, v.score) == ("vehicle", 1, pytest.approx(0.7))
    assert (v.x1, v.y1, v.x2, v.y2) == pytest.approx((0.5, 0.5, 1.0, 1.0), abs=1e-9)


def test_decode_clips_to_frame_and_caps_per_image():
    ad = NanoDetAdapter(_spec(max_detections=2))
    out = _empty_outputs(1)
    out["b8"][0, :, :] = _sides([10], [10], [10], [10])  # 80 px each way: beyond the frame
    out["s8"][0, [0, 7, 56, 63], 0] = (0.5, 0.6, 0.7, 0.8)  # four corners, same huge box -> NMS keeps 1
    out["s8"][0, 63, 1] = 0.45
    [objs] = ad.decode(out, [(64, 64)])
    assert [(o.label, round(o.score, 2)) for o in objs] == [("person", 0.8), ("vehicle", 0.45)]
    assert all((o.x1, o.y1, o.x2, o.y2) == (0.0, 0.0, 1.0, 1.0) for o in objs)


def test_decode_nothing_over_threshold():
    assert NanoDetAdapter(_spec()).decode(_empty_outputs(3), [(10, 10)] * 3) == [[], [], []]


def test_input_must_fit_largest_stride_and_class_map_must_keep_something():
    with pytest.raises(ModelError, match="multiple of the largest stride"):
        NanoDetAdapter(_spec(input=InputSpec("in", 100, 64, "NCHW", "float32", "BGR")))
    with pytest.raises(ModelError, match="maps none"):
        NanoDetAdapter(_spec(class_map={}))
    with pytest.raises(ModelError, match="no adapter"):
        adapter_for(_spec(format="yolo-someday"))
    assert set(ADAPTERS) >= {"nanodet", "tf_ssd"}


def test_choose_providers():
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, gpu) == gpu
    assert choose_providers(None, ["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["cuda", "cpu"], gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ModelError, match="not available"):
        choose_providers(["cuda"], ["CPUExecutionProvider"])


# ---- model folders -------------------------------------------------------------------------------

def test_missing_or_corrupt_model_folder_errors_say_what_to_do(tmp_path):
    with pytest.raises(ModelError, match="no such folder"):
        Detector.from_folder(tmp_path / "absent")
    with pytest.raises(ModelError, match="model.yaml is missing"):
        Detector.from_folder(tmp_path)
    (tmp_path / "model.yaml").write_text("name: [unclosed")
    with pytest.raises(ModelError, match="not valid YAML"):
        Detector.from_folder(tmp_path)
    yaml_text = (MODELS / "nanodet-g-416" / "model.yaml").read_text()
    (tmp_path / "model.yaml").write_text(yaml_text)
    with pytest.raises(ModelError, match="model.onnx is missing"):
        Detector.from_folder(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"truncated download")
    with pytest.raises(ModelError, match="sha256") as info:
        Detector.from_folder(tmp_path)
    assert str(tmp_path) in str(info.value) and "copy it again" in str(info.value)
    (tmp_path / "model.yaml").write_text(yaml_text.replace("format: nanodet", "format: nope"))
    with pytest.raises(ModelError, match="has no adapter"):
        Detector.from_folder(tmp_path)


def test_shipped_model_yamls_parse():
    nano = load_spec(MODELS / "nanodet-g-416")
    assert (nano.format, len(nano.classes), nano.classes[7], nano.class_map["truck"]) == ("nanodet", 80, "truck", "vehicle")
    ssd = load_spec(MODELS / "pedssd")
    assert (ssd.format, ssd.classes[1], ssd.class_map) == ("tf_ssd", "person", {"person": "person"})


# ---- the real models -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def det_nanodet() -> Detector:
    return Detector.from_folder(MODELS / "nanodet-g-416", threads=2)


def _check_well_formed(results, n, det: Detector):
    assert len(results) == n
    labels = set(det.spec.class_map.values())
    for objs in results:
        assert len(objs) <= det.spec.max_detections
        for o in objs:
            assert o.label in labels
            assert det.spec.class_map[det.spec.classes[o.class_id]] == o.label
            assert det.spec.score_threshold <= o.score <= 1.0
            assert 0.0 <= o.x1 <= o.x2 <= 1.0 and 0.0 <= o.y1 <= o.y2 <= 1.0
        assert [o.score for o in objs] == sorted((o.score for o in objs), reverse=True)


def test_real_nanodet_loads_and_runs_batch_1_and_3(det_nanodet):
    assert (det_nanodet.name, det_nanodet.version) == ("nanodet-g-416", "1")
    assert "CPUExecutionProvider" in det_nanodet.providers
    det_nanodet.warmup()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in ((480, 640), (720, 1280), (300, 300))]
    _check_well_formed(det_nanodet.detect(frames[:1]), 1, det_nanodet)
    _check_well_formed(det_nanodet.detect(frames), 3, det_nanodet)
    assert det_nanodet.detect([]) == []


def test_real_nanodet_in_stages_matches_detect_with_batches_prepared_ahead(det_nanodet):
    # The worker prepares a batch while the one before it runs: two prepared batches must not share
    # an input buffer, and a buffer given back after a run is reused by the next batch.
    rng = np.random.default_rng(3)
    first = [rng.integers(0, 256, (384, 512, 3), np.uint8) for _ in range(2)]
    second = [rng.integers(0, 256, (480, 640, 3), np.uint8)]
    expected = det_nanodet.detect(first), det_nanodet.detect(second)
    name = det_nanodet.adapter.input_name
    a, b = det_nanodet.prepare(first), det_nanodet.prepare(second)
    assert not np.shares_memory(a.feeds[name], b.feeds[name])
    buffer = a.feeds[name]
    out_a, out_b = det_nanodet.run(a), det_nanodet.run(b)
    assert a.feeds is None and b.feeds is None  # given back by the run
    assert (det_nanodet.decode(a, out_a), det_nanodet.decode(b, out_b)) == expected
    assert np.shares_memory(det_nanodet.prepare(first).feeds[name], buffer)


def _draw_stop_sign(img, cx, cy, r):
    k = np.arange(8)
    pts = np.stack([cx + r * np.cos(np.pi / 8 + k * np.pi / 4), cy + r * np.sin(np.pi / 8 + k * np.pi / 4)], 1)
    pts = pts.astype(np.int32)
    cv2.fillPoly(img, [pts], (30, 30, 200))
    cv2.polylines(img, [pts], True, (255, 255, 255), max(2, r // 12))
    cv2.putText(img, "STOP", (cx - int(r * 0.75), cy + int(r * 0.22)), cv2.FONT_HERSHEY_SIMPLEX, r / 55,
                (255, 255, 255), max(2, r // 10))
    cv2.rectangle(img, (cx - r // 10, cy + r), (cx + r // 10, img.shape[0]), (90, 90, 90), -1)


def test_real_nanodet_finds_a_drawn_stop_sign_where_it_is(det_nanodet):
    # A drawn stop sign is the one COCO class a synthetic picture gets confidently: it checks the
    # whole chain (BGR order, normalisation, strides, centres, side order, scaling) against a known box.
    spec = dataclasses.replace(det_nanodet.spec, class_map={"stop sign": "sign"})
    det = Detector(spec, det_nanodet.session, adapter_for(spec), det_nanodet.providers)
    frames, expected = [], []
    for w, h, cx, cy, r in ((640, 480, 200, 180, 80), (1920, 1080, 1350, 450, 180)):
        img = np.full((h, w, 3), (120, 160, 140), np.uint8)
        img[h * 2 // 3:] = (80, 80, 80)
        _draw_stop_sign(img, cx, cy, r)
        ok, jpeg = cv2.imencode(".jpg", img)
        frames.append(det.decode_jpeg(jpeg.tobytes()))
        expected.append(((cx - r) / w, (cy - r) / h, (cx + r) / w, (cy + r) / h))
    assert frames[1].shape == (540, 960, 3)  # 1080p decoded at half scale for a 416 input
    for objs, box in zip(det.detect(frames), expected):
        assert len(objs) == 1
        o = objs[0]
        assert (o.label, o.class_id) == ("sign", 11) and o.score > 0.6
        assert (o.x1, o.y1, o.x2, o.y2) == pytest.approx(box, abs=0.015)


def test_real_ssd_runs_batch_1_and_2():
    det = Detector.from_folder(MODELS / "pedssd", providers=["cpu"], threads=2)
    assert det.name == "pedssd" and det.providers == ["CPUExecutionProvider"]
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (480, 640, 3), np.uint8), np.zeros((200, 100, 3), np.uint8)]
    _check_well_formed(det.detect(frames[:1]), 1, det)
    _check_well_formed(det.detect(frames), 2, det)


def test_ssd_decode_hand_built_outputs():
    ad = adapter_for(_spec(format="tf_ssd", classes=("background", "person", "dog"),
                           class_map={"person": "person"}, extra={}))
    boxes = np.zeros((2, 4, 4), np.float32)
    boxes[0, 0] = (0.1, 0.2, 0.5, 0.6)  # ymin, xmin, ymax, xmax
    boxes[0, 1] = (0.0, 0.0, 1.0, 1.0)
    boxes[1, 0] = (0.2, 0.3, 0.4, 1.2)
    outs = {
        "detection_boxes:0": boxes,
        "detection_scores:0": np.array([[0.9, 0.8, 0.7, 0.95], [0.6, 0.3, 0, 0]], np.float32),
        "detection_classes:0": np.array([[1, 2, 1, 1], [1, 1, 0, 0]], np.float32),
        "num_detections:0": np.array([3, 2], np.float32),  # image 0's 4th entry is padding
    }
    a, b = ad.decode(outs, [(640, 480), (640, 480)])
    assert [(o.label, o.class_id, round(o.score, 2)) for o in a] == [("person", 1, 0.9), ("person", 1, 0.7)]
    assert (a[0].x1, a[0].y1, a[0].x2, a[0].y2) == pytest.approx((0.2, 0.1, 0.6, 0.5))
    assert [(round(o.score, 2), o.x2) for o in b] == [(0.6, 1.0)]  # 1.2 clipped; 0.3 below threshold


def test_classes_with_one_site_label_share_nms():
    # car and truck both map to "vehicle": the same box scored as both is one vehicle, the better.
    ad = NanoDetAdapter(_spec(classes=("person", "car", "truck"),
                              class_map={"person": "person", "car": "vehicle", "truck": "vehicle"}))
    out = _empty_outputs(1)
    out["b16"][0, 5] = _sides([1], [0, 2], [2], [1, 2])
    out["s16"][0, 5] = (0.0, 0.6, 0.8)
    [objs] = ad.decode(out, [(640, 480)])
    assert [(o.label, o.class_id, round(o.score, 3)) for o in objs] == [("vehicle", 2, 0.8)]
