from pathlib import Path

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
