"""Which detected objects a camera rule looks at, and where they stand."""

from __future__ import annotations

import numpy as np

from aimass.contracts import DetectedObject
from aimass.site import Site, Zone
from aimass_rules.geometry import bottom_centres, points_in_polygon


def watched(objects: list[DetectedObject], classes: frozenset[str], min_score: float) -> list[DetectedObject]:
    return [o for o in objects if o.label in classes and o.score >= min_score]


def feet(objects: list[DetectedObject]) -> np.ndarray:
    """(N, 2) bottom centres: where each object touches the ground."""
    return bottom_centres(np.array([(o.x1, o.y1, o.x2, o.y2) for o in objects]).reshape(-1, 4))


def in_zone(objects: list[DetectedObject], polygon: np.ndarray) -> list[DetectedObject]:
    if not objects:
        return []
    inside = points_in_polygon(feet(objects), polygon)
    return [o for o, ok in zip(objects, inside) if ok]


def zone_of(rule, site: Site) -> Zone:
    camera = site.camera(rule.camera)
    zone = camera.zone(rule.zone) if camera else None
    if zone is None:  # Site validation already refuses this; guards hand-built Sites
        raise ValueError(f"rule {rule.id!r}: zone {rule.zone!r} is not defined on camera {rule.camera!r}")
    return zone
