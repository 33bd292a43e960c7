"""The detector's model set and batch runner (serving.py), with stand-in detectors: routing per frame,
install between batches, a model that fails at run time, shadow agreement."""

from pathlib import Path

import numpy as np
import pytest

from aimass import routing as R
from aimass.contracts import DetectedObject, Frame
from aimass_detector.model import ModelError
from aimass_detector.preprocess import BadImage
from aimass_detector.serving import ModelSet, agreement, finish_batch, prepare_batch, run_batch, serve_batch

A, B, S = "det:1", "det:2", "shadow:1"


class FakeDetector:
    def __init__(self, model: str, fail: bool = False):
        self.name, self.version = R.split_ref(model)
        self.fail = fail
        self.runs: list[int] = []
        self.warmed: list[int] = []
        self.providers = ["CPUExecutionProvider"]

    def decode_jpeg(self, data: bytes):
        if data == b"bad":
            raise BadImage("not a JPEG")
        return np.zeros((4, 4, 3), np.uint8)

    def prepare(self, images):
        return len(images)

    def run(self, prepared):
        if self.fail:
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Reshape: cannot reshape")
        self.runs.append(prepared)
        return prepared

    def decode(self, prepared, outputs):
        return [[DetectedObject("person", 0, 0.9, 0.1, 0.1, 0.3, 0.5)] for _ in range(outputs)]

    def warmup(self, batch: int = 1):
        self.warmed.append(batch)


def frame(camera: str, seq: int, jpeg: bytes = b"ok") -> Frame:
    return Frame(site_id="s", camera_id=camera, seq=seq, captured_ms=1000.0 + seq, width=4, height=4, jpeg=jpeg)


def model_set(*available: str, broken: str = "") -> ModelSet:
    def load(folder: Path):
        if folder.name == broken:
            raise ModelError(f"model folder {folder}: cannot load")
        return FakeDetector(folder.name)
    return ModelSet(lambda model: Path(model), load)


def test_a_revision_is_loaded_beside_and_installed_whole():
    ms = model_set()
    r1 = R.initial(A)
    ms.install(r1, {A: ms.load(A)[0]})
    r2 = R.set_canary(r1, B, 50)
    assert ms.missing(r2) == [B]
    det, seconds = ms.load(B)
    assert seconds >= 0 and ms.routing is r1  # loading changes nothing yet
    assert ms.install(r2, {B: det}) == [] and ms.routing is r2
    assert ms.install(R.promote(r2, B), {}) == [A]  # A no longer needed: unloaded
    with pytest.raises(ModelError, match="not loaded"):
        ms.install(R.promote(r1, S), {})


def test_a_model_is_warmed_on_the_batch_sizes_it_is_given():
    assert model_set().load(A)[0].warmed == [1]
    ms = ModelSet(lambda model: Path(model), lambda folder: FakeDetector(folder.name), warm_batches=(1, 8))
    assert ms.load(A)[0].warmed == [1, 8]


def test_a_folder_holding_another_version_is_refused():
    ms = ModelSet(lambda model: Path("det:9"), lambda folder: FakeDetector(folder.name))
    with pytest.raises(ModelError, match="holds det:9"):
        ms.load(A)


def test_plan_follows_the_routing_per_frame():
    ms = model_set()
    routing = R.set_shadow(R.set_canary(R.initial(A), B, 50, by_key="frame"), S)
    ms.install(routing, {m: FakeDetector(m) for m in (A, B, S)})
    frames = [frame("cam", s) for s in range(200)]
    serve, shadow = ms.plan(frames)
    assert sorted(serve) == [A, B] and 70 < len(serve[B]) < 130
    assert sorted(serve[A] + serve[B]) == list(range(200))  # every frame exactly once
    assert shadow == {S: list(range(200))}


def test_a_batch_serves_each_frame_once_and_reports_a_failing_model():
    models = {A: FakeDetector(A), B: FakeDetector(B, fail=True), S: FakeDetector(S)}
    frames = [frame("c", 0), frame("c", 1, b"bad"), frame("c", 2), frame("c", 3)]
    # The worker's three stages, as its prepare and inference threads run them.
    batch = prepare_batch(models, {A: [0, 1], B: [2, 3]}, {S: [0, 1, 2]}, frames)
    assert models[A].runs == []  # preparing runs nothing
    run_batch(models, batch)
    res = finish_batch(models, batch)
    assert [s.model for s in res.served] == [A, "", "", ""]
    assert isinstance(res.served[1].bad_image, BadImage)
    assert res.served[0].batch_size == 1 and models[A].runs == [1]  # the bad JPEG never reached the model
    assert res.served[0].decoded_ms <= res.served[0].inferred_ms
    assert set(res.failed) == {B} and "Reshape" in res.failed[B] and res.unserved == [2, 3]
    assert [(r.model, r.indexes) for r in res.shadows] == [(S, [0])]  # shadows only keep served frames
    # The fallback serves the frames left, from the images already decoded.
    again = serve_batch(models, {A: res.unserved}, {}, frames, res.images)
    assert [again.served[i].model for i in (2, 3)] == [A, A] and models[A].runs == [1, 2]
    assert not again.failed and [s.model for s in again.served[:2]] == ["", ""]


def test_a_model_whose_outputs_cannot_be_decoded_fails_like_a_run():
    class Undecodable(FakeDetector):
        def decode(self, prepared, outputs):
            raise ValueError("nanodet outputs do not fit batch 2")
    models = {A: Undecodable(A), S: Undecodable(S)}
    res = serve_batch(models, {A: [0, 1]}, {S: [0, 1]}, [frame("c", 0), frame("c", 1)])
    assert res.unserved == [0, 1] and set(res.failed) == {A, S} and "do not fit" in res.failed[A]
    assert res.shadows == [] and all(s.objects is None for s in res.served)


def test_agreement_pairs_boxes_of_the_same_label():
    p = DetectedObject("person", 0, 0.9, 0.1, 0.1, 0.3, 0.5)
    near = DetectedObject("person", 0, 0.8, 0.11, 0.1, 0.31, 0.5)
    car = DetectedObject("vehicle", 2, 0.8, 0.1, 0.1, 0.3, 0.5)
    assert agreement([p], [near])[0] == 1 and agreement([p], [near])[1] > 0.9
    assert agreement([p], [car]) == (0, 0.0)
    assert agreement([p, near], [near])[0] == 1
    assert agreement([], [p]) == (0, 0.0)


def test_the_detector_worker_runs_opencv_on_its_own_threads(tmp_path):
    import cv2

    from aimass.settings import DetectorSettings
    from aimass_detector.worker import build_app

    before = cv2.getNumThreads()
    cv2.setNumThreads(2)  # OpenCV's default on 2 cores: a pool that splits each resize and then spins
    try:
        build_app(DetectorSettings(kafka_bootstrap="127.0.0.1:1", state_dir=tmp_path))  # builds; connects to nothing
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)
