"""Plane geometry for zones, in normalised image coordinates: x right, y down, both in [0, 1].

Point-in-polygon uses the even-odd rule (a ray cast towards +x crosses the boundary an odd number of
times), so the overlapping part of a self-intersecting polygon counts as outside. A point on an edge
or a corner (within ``EDGE_EPS``) counts as inside: a person standing on a zone's painted line is in
the zone. Everything is vectorised over points and edges; a frame holds at most a few hundred boxes.
"""

from __future__ import annotations

import numpy as np

EDGE_EPS = 1e-9  # far below one pixel of any camera (1 / 4096), far above float64 rounding


def as_polygon(points) -> np.ndarray:
    """Corners as an (M, 2) float array; the last corner joins the first."""
    poly = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(poly) < 3:
        raise ValueError(f"a polygon needs at least 3 corners, got {len(poly)}")
    return poly


def bottom_centres(boxes) -> np.ndarray:
    """(N, 4) boxes ``x1, y1, x2, y2`` -> (N, 2) bottom-centre points.

    The bottom centre is where an object touches the ground, so it is the point that decides which
    zone the object is in. Corners may come in either order; the point is clipped to the frame,
    because detectors return boxes that run slightly past the edge for objects cut off by it.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x = (b[:, 0] + b[:, 2]) * 0.5
    y = np.maximum(b[:, 1], b[:, 3])  # y grows downwards
    return np.clip(np.stack([x, y], axis=1), 0.0, 1.0)


def bottom_centre(x1: float, y1: float, x2: float, y2: float) -> tuple[float, float]:
    """``bottom_centres`` for one box, in plain floats (the same arithmetic; conditionals rather than
    min/max calls, which cost more than the arithmetic here)."""
    x, y = (x1 + x2) * 0.5, (y1 if y1 >= y2 else y2)
    return (0.0 if x < 0.0 else 1.0 if x > 1.0 else x), (0.0 if y < 0.0 else 1.0 if y > 1.0 else y)


# Below this many point-edge pairs, plain float arithmetic beats numpy's per-call overhead (a frame's
# few objects against a zone: measured 5x faster), with the same operations in the same order.
SMALL_PAIRS = 96


def points_in_polygon(points, polygon, eps: float = EDGE_EPS) -> np.ndarray:
    """(N, 2) points, (M, 2) polygon -> (N,) bool: inside or on the boundary."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    poly = as_polygon(polygon)
    if len(p) * len(poly) <= SMALL_PAIRS:
        sides = edges(poly)
        return np.array([point_in(x, y, sides, eps) for x, y in p.tolist()], dtype=bool)
    px, py = p[:, 0:1], p[:, 1:2]  # (N, 1) against (M,) edges -> (N, M)
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    ex, ey = x1 - x0, y1 - y0

    # Even-odd crossing count. The half-open test (y0 > py) != (y1 > py) counts a vertex lying on the
    # ray exactly once and skips horizontal edges, whose dy would be zero.
    straddles = (y0 > py) != (y1 > py)
    dy = np.where(straddles, ey, 1.0)
    x_cross = x0 + (py - y0) * ex / dy
    inside = np.count_nonzero(straddles & (px < x_cross), axis=1) % 2 == 1

    # Boundary: distance from the point to the nearest point of each edge segment.
    len2 = ex * ex + ey * ey
    t = np.clip(((px - x0) * ex + (py - y0) * ey) / np.where(len2 > 0, len2, 1.0), 0.0, 1.0)
    dx, dyy = px - (x0 + t * ex), py - (y0 + t * ey)
    on_edge = np.any(dx * dx + dyy * dyy <= eps * eps, axis=1)
    return inside | on_edge


def edges(polygon) -> list[tuple[float, ...]]:
    """The polygon's sides for ``point_in``, in plain floats, computed once per zone: each side's start
    corner, its end's y, its direction (ex, ey), its squared length (1.0 for a zero-length side, as the
    vectorised path divides by) and its bounding box (x min, x max, y min, y max)."""
    corners = as_polygon(polygon).tolist()
    out = []
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
        ex, ey = x1 - x0, y1 - y0
        len2 = ex * ex + ey * ey
        out.append((x0, y0, y1, ex, ey, len2 if len2 > 0 else 1.0, min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)))
    return out


def bounds(polygon, eps: float = EDGE_EPS) -> tuple[float, float, float, float]:
    """(x min, y min, x max, y max) of the polygon, widened by ``eps``: a point outside them is neither
    inside nor on an edge (``point_in`` would say False), so a caller may skip the test."""
    poly = as_polygon(polygon)
    (x0, y0), (x1, y1) = poly.min(axis=0), poly.max(axis=0)
    return float(x0) - eps, float(y0) - eps, float(x1) + eps, float(y1) + eps


def point_in(px: float, py: float, sides, eps: float = EDGE_EPS) -> bool:
    """``points_in_polygon`` for one point against ``edges(polygon)``, with the vectorised path's
    arithmetic. Inside by the crossing count is enough; only a point outside is measured against the
    sides it could be within ``eps`` of (those whose box, widened, holds it): a side farther than that
    cannot be within ``eps``, so the answer is the vectorised path's with a fraction of the work."""
    crossings = 0
    for x0, y0, y1, ex, ey, _, _, _, _, _ in sides:
        if (y0 > py) != (y1 > py) and px < x0 + (py - y0) * ex / ey:
            crossings += 1
    if crossings % 2 == 1:
        return True
    eps2, margin = eps * eps, 2 * eps  # twice eps: room for the rounding of the nearest point's coordinates
    for x0, y0, _, ex, ey, len2, lo_x, hi_x, lo_y, hi_y in sides:
        if lo_x - margin <= px <= hi_x + margin and lo_y - margin <= py <= hi_y + margin:
            t = ((px - x0) * ex + (py - y0) * ey) / len2
            t = 0.0 if t < 0.0 else 1.0 if t > 1.0 else t
            dx, dy = px - (x0 + t * ex), py - (y0 + t * ey)
            if dx * dx + dy * dy <= eps2:
                return True
    return False
