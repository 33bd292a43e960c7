"""The bench's free stand-in model (aimass.bench.free_model): a real model folder's outputs on one frame,
answered for every frame of any batch, so a worker through it does all its work but the model's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aimass.bench import free_model, workload
from aimass.settings import DEFAULT_SITE_FILE
from aimass.site import load_site
from aimass_detector.engine import Detector
from aimass_detector.model import load_spec, verify

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    site = load_site(DEFAULT_SITE_FILE)
    frames = workload.render(workload.cameras(site, 3), 3)  # the third (cam-yard) has a walker from the start
    return [f.jpeg for fs in frames.values() for f in fs]


@pytest.mark.parametrize("folder", ["nanodet-g-416", "pedssd"])  # NCHW float32 and NHWC uint8 inputs
def test_free_model_answers_every_frame_as_the_real_model_did_its_busiest(folder, jpegs, tmp_path):
    real = Detector.from_folder(MODELS / folder, providers=["cpu"])
    found = [real.detect([real.decode_jpeg(j)])[0] for j in jpegs]
    busiest = max(found, key=len)
    assert busiest, "the sample has no frame with an object: the test would prove nothing"

    free = free_model.build(MODELS / folder, tmp_path / "free", jpegs)

    assert free.objects == len(busiest)
    spec = load_spec(free.folder)
    verify(spec)  # its sha256 is its own
    assert spec.name == f"{folder}-free" and spec.format == real.spec.format
    det = Detector.from_folder(free.folder, providers=["cpu"])
    black = np.zeros((240, 320, 3), np.uint8)
    # Any frame, any batch size: the busiest frame's objects (boxes normalised, so the size is moot).
    for batch in ([black], [black] * 3, [real.decode_jpeg(jpegs[0])] * 4):
        assert det.detect(batch) == [busiest] * len(batch)
