"""The motion gate and the adaptive rate on the demo site's scripted scenes (real photographs moved
along scripted paths, rendered with sensor grain)."""

import numpy as np
import pytest

from aimass.site import Camera, load_site
from aimass.settings import DEFAULT_SITE_FILE
from aimass_gateway.bandwidth import measure
from aimass_gateway.gating import AdaptiveRate, GateConfig, MotionGate, changed_fraction, small_grey
from aimass_gateway.scene import SceneRenderer


@pytest.fixture(scope="module")
def site():
    return load_site(DEFAULT_SITE_FILE)


def _camera(actors, background="yard") -> Camera:
    return Camera(id="cam-t", width=512, height=384, fps=5, scene={"background": background, "actors": actors})


def _run(renderer: SceneRenderer, gate: MotionGate, seconds: float, fps: float = 5.0):
    return [(k / fps, gate.decide(renderer.render(k / fps)[0], k / fps)) for k in range(int(seconds * fps))]


def test_a_still_scene_sends_only_keepalives():
    # The yard with nobody in it: only sensor grain changes from frame to frame.
    decisions = _run(SceneRenderer(_camera([])), MotionGate(GateConfig(keepalive_s=10)), 60)
    sent = [(t, d.reason) for t, d in decisions if d.send]
    assert sent == [(0.0, "first"), (10.0, "keepalive"), (20.0, "keepalive"), (30.0, "keepalive"),
                    (40.0, "keepalive"), (50.0, "keepalive")]
    assert max(d.changed for t, d in decisions if t > 0) == 0.0  # the grain never counts as change


def test_a_walking_person_sends_frames_and_a_still_one_does_not():
    walker = {"id": "p", "asset": "person_1", "label": "person", "height": 0.55,
              "path": [{"t": 5, "x": 0.1, "y": 0.9}, {"t": 15, "x": 0.9, "y": 0.9}]}
    decisions = _run(SceneRenderer(_camera([walker])), MotionGate(GateConfig(keepalive_s=10, hold_s=1)), 30)
    walking = [d for t, d in decisions if 5.2 <= t <= 14.8]
    assert all(d.send and d.reason == "motion" for d in walking), [d for d in walking if not d.send]
    # The person vanishes after 15 s (a change too), then one second of hold, then only keep-alives,
    # counted from the last frame sent.
    after = [(t, d.reason) for t, d in decisions if t >= 15.2 and d.send]
    assert after == [(15.2, "motion"), (15.4, "hold"), (15.6, "hold"), (15.8, "hold"), (16.0, "hold"),
                     (16.2, "hold"), (26.2, "keepalive")]
    assert [(t, d.reason) for t, d in decisions if t < 5 and d.send] == [(0.0, "first")]


def test_slow_change_adds_up_against_the_last_sent_frame():
    gate = MotionGate(GateConfig(pixel_threshold=20, min_changed=0.01, keepalive_s=1000, hold_s=0))
    base = np.full((96, 128, 3), 100, np.uint8)
    assert gate.decide(base, 0).reason == "first"
    sent = []
    for step in range(1, 30):  # brighten a quarter of the picture by 2 levels a frame
        img = base.copy()
        img[:48, :64] += 2 * step
        sent.append(gate.decide(img, step).send)
    assert sent.index(True) == 10 and sum(sent) == 2  # 22 > 20 levels after 11 steps; then again after 11 more


def test_changed_fraction_and_resolution_change():
    a = small_grey(np.zeros((100, 200, 3), np.uint8), 50)
    assert a.shape == (25, 50)
    b = a.copy()
    b[:5] = 100
    assert changed_fraction(a, b, 20) == pytest.approx(0.2)
    assert changed_fraction(a, small_grey(np.zeros((100, 100, 3), np.uint8), 50), 20) == 1.0


def test_adaptive_rate():
    r = AdaptiveRate(fps=5, idle_fps=1)
    assert r.period_s(active=True) == pytest.approx(0.2)
    assert r.period_s(active=False) == pytest.approx(1.0)
    assert r.period_s(active=True, spooling=True) == pytest.approx(1.0)  # spooling: fewer frames to store
    assert AdaptiveRate(fps=5).period_s(active=False) == pytest.approx(0.2)


def test_bandwidth_saving_on_the_demo_scenes(site):
    """What the README quotes (`aimass gateway bandwidth`, 60 s): every demo camera saves bytes, the
    quiet ones most; none of them goes dark (keep-alives)."""
    rows = measure(site, 60.0, GateConfig(keepalive_s=10))
    by = {r.camera_id: r for r in rows}
    assert set(by) == {"cam-gate", "cam-lobby", "cam-yard", "cam-dock"}
    for r in rows:
        assert r.frames == 300 and 0 < r.frames_sent < r.frames and 0 < r.bytes_sent < r.bytes_all
    # cam-lobby: the engineer walks 8-16 s and 40-48 s and stands still in between: most of it is skipped.
    assert by["cam-lobby"].saving > 0.5
    # cam-yard: a guard walks all the time: little to save, and the gate must not pretend otherwise.
    assert by["cam-yard"].saving < 0.3
    total = 1 - sum(r.bytes_sent for r in rows) / sum(r.bytes_all for r in rows)
    assert 0.3 < total < 0.6, total
