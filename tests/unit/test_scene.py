from pathlib import Path

import cv2
import numpy as np
import pytest

from aimass.site import Camera, load_site
from aimass_gateway.scene import AssetError, SceneRenderer, position

DEMO = Path(__file__).parents[2] / "services" / "gateway" / "sites" / "demo.yaml"


def _camera(**actor):
    a = {"id": "a", "asset": "person_1", "label": "person", "height": 0.5,
         "path": [{"t": 1, "x": 0.2, "y": 0.9}, {"t": 3, "x": 0.6, "y": 0.7}], **actor}
    return Camera(id="c", width=320, height=240, scene={"background": "yard", "actors": [a]})


def test_path_interpolates_and_exists_only_in_its_span():
    actor = _camera().scene.actors[0]
    assert position(actor, 0.99) is None and position(actor, 3.01) is None
    assert position(actor, 2) == pytest.approx((0.4, 0.8))
    assert position(actor, 3) == pytest.approx((0.6, 0.7))


def test_repeat_loops_the_path():
    actor = _camera(repeat_s=5).scene.actors[0]
    assert position(actor, 7) == pytest.approx(position(actor, 2))
    assert position(actor, 5.5) is None


def test_render_is_deterministic_and_ground_truth_matches_the_script():
    r = SceneRenderer(_camera())
    img, truths = r.render(2.0)
    img2, _ = SceneRenderer(_camera()).render(2.0)
    assert img.shape == (240, 320, 3) and img.dtype == np.uint8
    assert np.array_equal(img, img2)
    [g] = truths
    assert (g.foot_x, g.foot_y) == pytest.approx((0.4, 0.8))
    assert g.y2 == pytest.approx(0.8, abs=1 / 240) and g.y2 - g.y1 == pytest.approx(0.5, abs=1 / 240)
    assert g.x1 < 0.4 < g.x2
    empty, none = r.render(0.5)
    assert none == [] and not np.array_equal(empty, img)


def test_actor_at_the_edge_is_clipped():
    r = SceneRenderer(_camera(path=[{"t": 0, "x": 0.0, "y": 0.9}, {"t": 1, "x": 0.0, "y": 0.9}]))
    [g] = r.render(0.5)[1]
    assert g.x1 == 0.0 and g.x2 > 0


def test_unknown_asset_names_the_ones_available():
    with pytest.raises(AssetError, match="person_1"):
        SceneRenderer(_camera(asset="unicorn"))


def test_demo_site_validates_and_renders():
    site = load_site(DEMO)
    assert len(site.cameras) == 4 and len(site.sensors) == 8
    assert all(c.fps == 5 for c in site.cameras)
    for cam in site.cameras:
        SceneRenderer(cam).render(10.0)


ASSETS = Path(__file__).parents[2] / "services" / "gateway" / "assets"


def test_render_follows_repeat_and_leaves_the_background_when_absent():
    r = SceneRenderer(_camera(repeat_s=5))
    img2, [g2] = r.render(2.0)
    img7, [g7] = r.render(7.0)
    assert g7.bbox == g2.bbox and (g7.foot_x, g7.foot_y) == (g2.foot_x, g2.foot_y)
    bare = SceneRenderer(_camera(repeat_s=5), seed=0, noise=0).render(4.0)
    assert bare[1] == [] and np.array_equal(bare[0], SceneRenderer(_camera(), noise=0).background)


def test_nearer_actor_is_drawn_on_top_and_ground_truth_is_json_ready():
    near = {"id": "near", "asset": "person_1", "label": "person", "height": 0.5, "path": [{"t": 0, "x": 0.5, "y": 0.9}]}
    far = {"id": "far", "asset": "vehicle_1", "label": "vehicle", "height": 0.5, "path": [{"t": 0, "x": 0.5, "y": 0.8}]}
    cam = Camera(id="c", width=320, height=240, scene={"background": "yard", "actors": [near, far]})
    img, truths = SceneRenderer(cam, noise=0).render(0.0)
    assert [g.actor_id for g in truths] == ["far", "near"]  # drawing order: farther first
    alone = Camera(id="c", width=320, height=240, scene={"background": "yard", "actors": [near]})
    r = SceneRenderer(alone, noise=0)
    only_near, [g] = r.render(0.0)
    opaque = r._sprite(alone.scene.actors[0])[1][:, :, 0] == 1.0  # where the person hides what is behind
    x0, y0 = round(g.x1 * 320), round(g.y1 * 240)
    region = (slice(y0, y0 + opaque.shape[0]), slice(x0, x0 + opaque.shape[1]))
    assert opaque.sum() > 100
    assert np.array_equal(img[region][opaque], only_near[region][opaque])
    d = truths[1].as_dict()
    assert d["actor_id"] == "near" and d["label"] == "person" and d["foot_y"] == pytest.approx(0.9)
    assert set(d) == {"actor_id", "label", "x1", "y1", "x2", "y2", "foot_x", "foot_y"}


def test_noise_depends_on_seed_and_time_only():
    a = SceneRenderer(_camera(), seed=1).render(2.0)[0]
    assert np.array_equal(a, SceneRenderer(_camera(), seed=1).render(2.0)[0])
    assert not np.array_equal(a, SceneRenderer(_camera(), seed=2).render(2.0)[0])
    assert not np.array_equal(a, SceneRenderer(_camera(), seed=1).render(2.2)[0])
    clean = SceneRenderer(_camera(), noise=0).render(2.0)[0]
    assert np.abs(a.astype(int) - clean).mean() < 3  # light noise


def test_assets_the_sites_name_exist_are_small_and_credited():
    notice = (ASSETS / "NOTICE").read_text()
    files = [p for p in ASSETS.iterdir() if p.suffix in (".png", ".jpg")]
    assert {p.stem for p in files} >= {"yard", "person_1", "person_2", "vehicle_1", "bag_1"}
    for p in files:
        assert p.stat().st_size < 300_000, p
        assert p.name in notice, f"{p.name} is not credited in assets/NOTICE"
    assert sum(p.stat().st_size for p in ASSETS.iterdir()) < 2_000_000
    for name in ("person_1", "person_2", "vehicle_1", "bag_1"):
        img = cv2.imread(str(ASSETS / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert img.shape[2] == 4 and img[:, :, 3].min() == 0 and img[:, :, 3].max() == 255  # a real mask


def test_demo_has_restricted_zones_with_person_and_vehicle_rules():
    site = load_site(DEMO)
    intrusions = [r for r in site.rules if r.type == "zone_intrusion"]
    assert any(r.classes == ["vehicle"] for r in intrusions)
    assert sum("person" in r.classes for r in intrusions) >= 3
    assert any(r.type == "sensor_threshold" for r in site.rules)
    assert all(c.width == 512 and c.height == 384 and c.scene for c in site.cameras)
