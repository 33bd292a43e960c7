"""Every decoder of outside input, fed thousands of generated inputs (hypothesis): each either returns
a value that satisfies its contract or raises its one documented error type with a reason. Nothing
else may escape: a worker turns that error into a dead letter and goes on, anything else would crash it."""

from __future__ import annotations

import math

import cv2
import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimass import contracts
from aimass.contracts import ContractError
from aimass.site import SiteFileError, parse_site
from aimass_detector.preprocess import BadImage, decode_jpeg

KINDS = [contracts.Frame, contracts.SensorReading, contracts.Detections, contracts.Violation, contracts.DeadLetter,
         contracts.SiteConfig, contracts.ModelRouting, contracts.ModelEvent, contracts.ShadowResult]
MANY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = contracts.now_ms()

# Values of every shape msgpack can carry, with the awkward ones weighted in.
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=True),
                    st.text(max_size=40), st.binary(max_size=64), st.sampled_from([NOW, math.inf, -1, 0, "", b""]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                                            max_size=6), max_leaves=20)


def _valid(msg) -> None:
    """What a decoded message promises its reader."""
    assert msg.v == contracts.SCHEMA_VERSION
    t = getattr(msg, "captured_ms", None)
    if t is not None:
        assert math.isfinite(t) and contracts.MIN_CAPTURE_MS <= t <= contracts.now_ms() + contracts.MAX_CLOCK_AHEAD_MS
    if isinstance(msg, contracts.SensorReading):
        assert math.isfinite(msg.value) and msg.sensor_id
    for o in getattr(msg, "objects", []):
        assert all(math.isfinite(x) for x in (o.score, o.x1, o.y1, o.x2, o.y2))


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
@MANY
@given(data=st.binary(max_size=512))
def test_random_bytes(cls, data):
    try:
        _valid(contracts.decode(data, cls))
    except ContractError as exc:
        assert exc.reason in {"empty", "bad_encoding", "bad_schema", "bad_version", "bad_value", "bad_time", "too_large"}


def _mutations(cls):
    """Real messages of ``cls`` with one field replaced by anything, or a field dropped or added."""
    base = {
        contracts.Frame: dict(site_id="s", camera_id="c", seq=1, captured_ms=NOW, width=4, height=4, jpeg=b"\xff\xd8"),
        contracts.SensorReading: dict(site_id="s", sensor_id="t", seq=1, captured_ms=NOW, value=1.5),
        contracts.Detections: dict(site_id="s", camera_id="c", seq=1, captured_ms=NOW, width=4, height=4,
                                   model_name="m", model_version="1",
                                   objects=[contracts.DetectedObject("person", 0, 0.9, 0.1, 0.1, 0.2, 0.2)]),
        contracts.Violation: dict(violation_id="v", site_id="s", rule_id="r", rule_type="zone_intrusion",
                                  severity="high", started_ms=NOW, at_ms=NOW),
    }[cls]
    doc = msgspec.to_builtins(cls(**base))
    return st.one_of(
        st.tuples(st.sampled_from(sorted(doc)), values).map(lambda kv: {**doc, kv[0]: kv[1]}),
        st.sampled_from(sorted(doc)).map(lambda k: {kk: vv for kk, vv in doc.items() if kk != k}),
        st.tuples(st.text(min_size=1, max_size=8), values).map(lambda kv: {**doc, kv[0]: kv[1]}),
    )


@pytest.mark.parametrize("cls", [contracts.Frame, contracts.SensorReading, contracts.Detections, contracts.Violation],
                         ids=lambda c: c.__name__)
@MANY
@given(data=st.data())
def test_real_messages_with_one_field_gone_wrong(cls, data):
    doc = data.draw(_mutations(cls))
    try:
        _valid(contracts.decode(msgspec.msgpack.encode(doc), cls))
    except ContractError as exc:
        assert exc.reason in {"bad_schema", "bad_version", "bad_value", "bad_time", "too_large"}


_JPEG = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))[1].tobytes()


@settings(max_examples=1000, deadline=None)
@given(cut=st.integers(0, len(_JPEG)), flips=st.lists(st.tuples(st.integers(0, len(_JPEG) - 1), st.integers(0, 255)),
                                                      max_size=8))
def test_truncated_and_corrupted_jpegs(cut, flips):
    data = bytearray(_JPEG[:cut] if cut < len(_JPEG) else _JPEG)
    for i, b in flips:
        if i < len(data):
            data[i] = b
    try:
        img = decode_jpeg(bytes(data), 32, 24)
    except BadImage:
        return
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=300), values.map(lambda v: msgspec.json.encode(v).decode()),
                 st.builds(lambda rules: "site: {id: s}\ncameras: [{id: c}]\nrules:\n" + rules, st.text(max_size=120))))
def test_site_files(text):
    try:
        site = parse_site(text, "fuzz.yaml")
    except SiteFileError as exc:
        assert str(exc).startswith("fuzz.yaml")  # every error names the file
        return
    assert site.site.id
