"""Property tests for the zone geometry (aimass_rules.geometry), against independent references.

Exact references use polygons and points on a 1/64 grid: with integer coordinates the even-odd rule
and "on the boundary" can be decided without rounding, and every grid point off the boundary is at
least ~1e-4 away from it, far outside EDGE_EPS, so the float code must agree exactly.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from aimass_rules.geometry import EDGE_EPS, bottom_centre, bottom_centres, points_in_polygon

GRID = 64

grid_points = st.tuples(st.integers(0, GRID), st.integers(0, GRID))
# Any polygon, including self-intersecting ones, repeated corners and zero-area ones.
grid_polygons = st.lists(grid_points, min_size=3, max_size=8)
unit = st.floats(0.0, 1.0, allow_nan=False)
float_points = st.tuples(unit, unit)
float_polygons = st.lists(float_points, min_size=3, max_size=8)


def _scaled(pts) -> np.ndarray:
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2) / GRID


def _on_segment(p, a, b) -> bool:
    cross = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
    return (cross == 0 and min(a[0], b[0]) <= p[0] <= max(a[0], b[0])
            and min(a[1], b[1]) <= p[1] <= max(a[1], b[1]))


def reference_inside(p, poly) -> bool:
    """Exact integer reference: on an edge or corner, or an odd winding number (whose parity is the
    parity of the even-odd crossing count)."""
    edges = list(zip(poly, poly[1:] + poly[:1]))
    if any(_on_segment(p, a, b) for a, b in edges):
        return True
    wn = 0
    for a, b in edges:
        is_left = (b[0] - a[0]) * (p[1] - a[1]) - (p[0] - a[0]) * (b[1] - a[1])
        if a[1] <= p[1] < b[1] and is_left > 0:
            wn += 1
        elif b[1] <= p[1] < a[1] and is_left < 0:
            wn -= 1
    return wn % 2 == 1


@given(grid_polygons, st.lists(grid_points, min_size=1, max_size=30))
def test_matches_exact_even_odd_reference_on_the_grid(poly, pts):
    got = points_in_polygon(_scaled(pts), _scaled(poly)).tolist()
    assert got == [reference_inside(p, poly) for p in pts]


@given(grid_polygons, st.lists(grid_points, min_size=1, max_size=30),
       st.floats(-3, 3, allow_nan=False), st.floats(-3, 3, allow_nan=False))
def test_translating_point_and_polygon_together_changes_nothing(poly, pts, dx, dy):
    # On the grid the boundary is decided exactly, so this holds for boundary points too: a shift
    # only adds rounding far below EDGE_EPS.
    shift = np.array([dx, dy])
    moved = points_in_polygon(_scaled(pts) + shift, _scaled(poly) + shift).tolist()
    assert moved == [reference_inside(p, poly) for p in pts]


@given(float_polygons, st.lists(float_points, min_size=1, max_size=30), st.integers(0, 7))
def test_corner_order_reversed_or_rotated_gives_the_same_answer(poly, pts, k):
    base = points_in_polygon(pts, poly)
    k %= len(poly)
    np.testing.assert_array_equal(points_in_polygon(pts, poly[::-1]), base)
    np.testing.assert_array_equal(points_in_polygon(pts, poly[k:] + poly[:k]), base)


@given(float_polygons, st.lists(float_points, min_size=2, max_size=30))
def test_vectorised_answer_equals_one_point_at_a_time(poly, pts):
    batch = points_in_polygon(pts, poly).tolist()
    assert batch == [bool(points_in_polygon([p], poly)[0]) for p in pts]


@given(float_polygons, st.floats(0.0, 1.0))
def test_corners_and_points_on_edges_are_inside(poly, t):
    corners = np.asarray(poly)
    nxt = np.roll(corners, -1, axis=0)
    on_edges = corners + t * (nxt - corners)  # one point on every edge, corners at t = 0 and 1
    assert points_in_polygon(corners, poly).all()
    assert points_in_polygon(on_edges, poly).all()


def _cross(o, a, b) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def convex_hull(points) -> list[tuple[float, float]]:
    """Andrew's monotone chain, collinear points dropped."""
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts
    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and _cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and _cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def _distance_to_boundary(p: np.ndarray, poly: np.ndarray) -> float:
    a, b = poly, np.roll(poly, -1, axis=0)
    e = b - a
    t = np.clip(((p - a) * e).sum(axis=1) / (e * e).sum(axis=1), 0, 1)
    return float(np.min(np.hypot(*(p - (a + t[:, None] * e)).T)))


@given(st.lists(float_points, min_size=3, max_size=12), st.lists(float_points, min_size=1, max_size=30))
def test_convex_polygon_matches_the_half_plane_test(cloud, pts):
    hull = convex_hull(cloud)
    assume(len(hull) >= 3)
    poly = np.array(hull)
    area2 = sum(_cross(hull[0], hull[i], hull[i + 1]) for i in range(1, len(hull) - 1))
    assume(area2 > 1e-6)
    got = points_in_polygon(pts, poly)
    exact = [(Fraction(x), Fraction(y)) for x, y in hull]  # floats are exact fractions: no rounding
    for p, inside in zip(pts, got.tolist()):
        d = _distance_to_boundary(np.asarray(p), poly)
        if d <= EDGE_EPS / 2:
            assert inside  # on the boundary: inside by definition
            continue
        if d <= 2 * EDGE_EPS:
            continue  # about EDGE_EPS from the boundary: either answer is right
        # Counter-clockwise in (x, y) maths orientation: inside means left of (or on) every edge.
        q = (Fraction(p[0]), Fraction(p[1]))
        expected = all(_cross(exact[i], exact[(i + 1) % len(exact)], q) >= 0 for i in range(len(exact)))
        assert inside == expected, (p, hull)


@st.composite
def rect_and_points(draw):
    x0, x1 = sorted(draw(st.lists(unit, min_size=2, max_size=2, unique=True)))
    y0, y1 = sorted(draw(st.lists(unit, min_size=2, max_size=2, unique=True)))
    coord_x = st.one_of(st.sampled_from([x0, x1, (x0 + x1) / 2]), st.floats(-0.5, 1.5))
    coord_y = st.one_of(st.sampled_from([y0, y1, (y0 + y1) / 2]), st.floats(-0.5, 1.5))
    pts = draw(st.lists(st.tuples(coord_x, coord_y), min_size=1, max_size=30))
    return (x0, y0, x1, y1), pts


@given(rect_and_points(), st.booleans())
def test_axis_aligned_rectangle_is_a_direct_comparison(rect_pts, clockwise):
    (x0, y0, x1, y1), pts = rect_pts
    poly = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    got = points_in_polygon(pts, poly[::-1] if clockwise else poly).tolist()
    for (x, y), inside in zip(pts, got):
        expected = x0 <= x <= x1 and y0 <= y <= y1
        if not expected:
            # Within EDGE_EPS outside still counts as on the edge; only judge points clearly apart.
            gap = np.hypot(max(x0 - x, 0, x - x1), max(y0 - y, 0, y - y1))
            if gap <= 2 * EDGE_EPS:
                continue
        assert inside == expected, ((x, y), (x0, y0, x1, y1))


boxes = st.lists(st.tuples(*[st.floats(-0.5, 1.5, allow_nan=False)] * 4), min_size=0, max_size=20)


@given(boxes)
def test_bottom_centre_lies_in_the_box_x_range_at_its_lowest_y_clipped_to_the_frame(bs):
    got = bottom_centres(bs)
    assert got.shape == (len(bs), 2)
    for (x1, y1, x2, y2), (x, y) in zip(bs, got.tolist()):
        lo, hi = min(x1, x2), max(x1, x2)
        assert min(max(lo, 0.0), 1.0) <= x <= min(max(hi, 0.0), 1.0)
        assert y == min(max(max(y1, y2), 0.0), 1.0)
        assert 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0
        # Corners in either order give the same point.
        assert bottom_centre(x2, y2, x1, y1) == bottom_centre(x1, y1, x2, y2) == (x, y)


@given(st.lists(float_points, min_size=1, max_size=12), float_polygons)
def test_the_small_input_path_agrees_with_the_vectorised_one_exactly(points, polygon):
    """Few points against a zone take the plain-float path; many take numpy. Same answers, bit for bit
    (the same operations in the same order), including points on edges and corners."""
    pts = np.asarray(points, dtype=np.float64)
    pts = np.concatenate([pts, np.asarray(polygon, dtype=np.float64)])  # corners: on the boundary
    small, vectorised = _both_paths(pts, polygon)
    assert small.dtype == bool and small.shape == vectorised.shape
    assert small.tolist() == vectorised.tolist()


def _both_paths(pts: np.ndarray, polygon) -> tuple[np.ndarray, np.ndarray]:
    """``points_in_polygon`` through the plain-float path and through the vectorised one."""
    import aimass_rules.geometry as g

    saved = g.SMALL_PAIRS
    try:
        g.SMALL_PAIRS = 10**9
        small = g.points_in_polygon(pts, polygon)
        g.SMALL_PAIRS = -1
        return small, g.points_in_polygon(pts, polygon)
    finally:
        g.SMALL_PAIRS = saved


@given(st.lists(st.tuples(st.floats(-0.2, 1.2), st.floats(-0.2, 1.2)), min_size=1, max_size=20), float_polygons)
def test_a_point_outside_the_bounds_is_never_in_the_polygon(points, polygon):
    """in_zone skips the per-side test for feet outside ``bounds``: that must never change an answer,
    for points near the bounds, on edges and on corners alike."""
    from aimass_rules.geometry import bounds, edges, point_in

    x0, y0, x1, y1 = bounds(polygon)
    sides = edges(polygon)
    near = [(x0, y0), (x1, y1), (x0 + EDGE_EPS, y1 - EDGE_EPS)] + [tuple(p) for p in polygon]
    for x, y in [*points, *near]:
        if point_in(x, y, sides):
            assert x0 <= x <= x1 and y0 <= y <= y1


@given(float_polygons, st.integers(0, 7), st.floats(0.0, 1.0), st.sampled_from([0.0, 0.5, 0.99, 1.0, 1.01, 1.5, 2.0, 3.0]),
       st.sampled_from([1.0, -1.0]))
def test_points_within_a_few_eps_of_a_side_get_the_vectorised_answer(polygon, k, t, eps_off, sign):
    """point_in measures the distance only to the sides whose box, widened, holds the point: points just
    inside or outside EDGE_EPS of a side (where that shortcut decides) get the vectorised path's
    answer, bit for bit."""
    (ax, ay), (bx, by) = polygon[k % len(polygon)], polygon[(k + 1) % len(polygon)]
    length = float(np.hypot(bx - ax, by - ay))
    assume(length > 1e-6)
    nx, ny = -(by - ay) / length, (bx - ax) / length  # the side's unit normal
    off = sign * eps_off * EDGE_EPS
    pts = np.asarray([(ax + t * (bx - ax) + off * nx, ay + t * (by - ay) + off * ny),
                      (ax + off * nx, ay + off * ny), (bx - off * ny, by + off * nx)], dtype=np.float64)
    small, vectorised = _both_paths(pts, polygon)
    assert small.tolist() == vectorised.tolist()


objects = st.lists(st.tuples(st.sampled_from(["person", "vehicle", "bag"]), st.floats(0.0, 1.0),
                             *[st.floats(-0.5, 1.5, allow_nan=False)] * 4, st.integers(-1, 3)), max_size=10)


@given(objects, st.floats(0.0, 1.0), st.booleans(), st.one_of(st.none(), st.tuples(unit, unit, unit, unit)))
def test_standing_is_watched_then_bottom_centre_then_the_box(objs, min_score, tracked, box):
    """objects.standing does in one pass what the rules did in three: the class and score filter
    (``watched``), the track filter, ``bottom_centre``, and (``within``) the bounds test."""
    from aimass.contracts import DetectedObject
    from aimass_rules.objects import standing, watched

    dets = [DetectedObject(label, 0, score, x1, y1, x2, y2, track_id=tid) for label, score, x1, y1, x2, y2, tid in objs]
    classes = frozenset({"person", "bag"})
    expected = []
    for o in watched(dets, classes, min_score):
        x, y = bottom_centre(o.x1, o.y1, o.x2, o.y2)
        if (o.track_id >= 0 or not tracked) and (box is None or (box[0] <= x <= box[2] and box[1] <= y <= box[3])):
            expected.append((o, x, y))
    assert standing(dets, classes, min_score, tracked=tracked, within=box) == expected
