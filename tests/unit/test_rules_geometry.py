import math

import numpy as np
import pytest

from aimass_rules.geometry import bottom_centre, bottom_centres, points_in_polygon

SQUARE = [(0.2, 0.2), (0.6, 0.2), (0.6, 0.8), (0.2, 0.8)]
# An L shape: the notch at the top right is outside.
ELL = [(0.1, 0.1), (0.4, 0.1), (0.4, 0.5), (0.9, 0.5), (0.9, 0.9), (0.1, 0.9)]


def inside(points, poly):
    return points_in_polygon(np.array(points, dtype=float), poly).tolist()


def test_square_inside_outside_edge_and_corner():
    assert inside([(0.4, 0.5)], SQUARE) == [True]
    assert inside([(0.1, 0.5), (0.7, 0.5), (0.4, 0.1), (0.4, 0.9)], SQUARE) == [False] * 4
    # On each edge and on corners: inside by definition.
    assert inside([(0.2, 0.5), (0.6, 0.5), (0.4, 0.2), (0.4, 0.8), (0.2, 0.2), (0.6, 0.8)], SQUARE) == [True] * 6
    # Just past an edge.
    assert inside([(0.6 + 1e-6, 0.5), (0.4, 0.8 + 1e-6)], SQUARE) == [False, False]


def test_concave_polygon_notch_is_outside():
    assert inside([(0.7, 0.3), (0.25, 0.3), (0.7, 0.7)], ELL) == [False, True, True]


def test_ray_through_a_vertex_counts_once():
    diamond = [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]
    # The ray from these points towards +x passes exactly through the vertex (1.0, 0.5).
    assert inside([(0.2, 0.5), (0.5, 0.5), (0.99, 0.5)], diamond) == [True, True, True]
    # A horizontal edge level with the point, to its right.
    step = [(0.0, 0.0), (1.0, 0.0), (1.0, 0.5), (0.6, 0.5), (0.6, 1.0), (0.0, 1.0)]
    assert inside([(0.3, 0.5), (0.8, 0.75)], step) == [True, False]


def test_even_odd_self_intersecting_star_centre_is_outside():
    star = [(0.5 + 0.4 * math.cos(math.radians(90 + 144 * k)), 0.5 - 0.4 * math.sin(math.radians(90 + 144 * k)))
            for k in range(5)]
    assert inside([(0.5, 0.5)], star) == [False]  # the pentagon in the middle is crossed twice
    assert inside([(0.5, 0.15)], star) == [True]  # inside the top point


def test_matches_a_convex_reference_on_random_points():
    rng = np.random.default_rng(7)
    hexagon = [(0.5 + 0.3 * math.cos(a), 0.5 + 0.3 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 7)[:-1]]
    pts = rng.random((2000, 2))
    got = points_in_polygon(pts, hexagon)
    poly = np.array(hexagon)
    edges = np.roll(poly, -1, axis=0) - poly
    rel = pts[:, None, :] - poly[None, :, :]
    cross = edges[None, :, 0] * rel[:, :, 1] - edges[None, :, 1] * rel[:, :, 0]
    expected = np.all(cross >= 0, axis=1) | np.all(cross <= 0, axis=1)
    assert got.shape == (2000,)
    assert (got == expected).all()
    assert 0 < got.sum() < 2000


def test_empty_points_and_bad_polygon():
    assert points_in_polygon(np.empty((0, 2)), SQUARE).shape == (0,)
    with pytest.raises(ValueError):
        points_in_polygon([(0.5, 0.5)], [(0, 0), (1, 1)])


def test_bottom_centre():
    assert bottom_centre(0.1, 0.2, 0.3, 0.6) == pytest.approx((0.2, 0.6))
    assert bottom_centre(0.3, 0.6, 0.1, 0.2) == pytest.approx((0.2, 0.6))  # corners in either order
    assert bottom_centre(0.9, 0.5, 1.1, 1.05) == pytest.approx((1.0, 1.0))  # clipped to the frame
    got = bottom_centres([[0.0, 0.0, 0.2, 0.4], [0.5, 0.1, 0.7, 0.3]])
    np.testing.assert_allclose(got, [[0.1, 0.4], [0.6, 0.3]])
