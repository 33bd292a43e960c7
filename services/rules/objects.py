"""Which detected objects a camera rule looks at, and where they stand."""

from __future__ import annotations

import numpy as np

from aimass.contracts import DetectedObject
from aimass.site import Site, Zone
from aimass_rules.evaluator import RuleEvaluator, Source
from aimass_rules.geometry import as_polygon, bottom_centre, bottom_centres, bounds, edges, point_in, points_in_polygon


def watched(objects: list[DetectedObject], classes: frozenset[str], min_score: float) -> list[DetectedObject]:
    return [o for o in objects if o.label in classes and o.score >= min_score]


def feet(objects: list[DetectedObject]) -> list[tuple[float, float]]:
    """Bottom centres: where each object touches the ground (plain floats: a frame's few objects cost
    less this way than one numpy call)."""
    return [bottom_centre(o.x1, o.y1, o.x2, o.y2) for o in objects]


def in_zone(objects: list[DetectedObject], polygon: np.ndarray, sides: list,
            box: tuple[float, float, float, float]) -> list[DetectedObject]:
    """The objects whose feet stand in ``polygon``, whose ``edges`` are ``sides`` and whose ``bounds``
    are ``box``."""
    if not objects:
        return []
    if len(objects) <= 8:  # a frame's few objects: plain floats, no numpy call (see geometry.SMALL_PAIRS)
        x0, y0, x1, y1 = box
        out = []
        for o in objects:
            x, y = bottom_centre(o.x1, o.y1, o.x2, o.y2)
            # Feet outside the zone's bounds are outside it: most objects skip the per-side test.
            if x0 <= x <= x1 and y0 <= y <= y1 and point_in(x, y, sides):
                out.append(o)
        return out
    inside = points_in_polygon(bottom_centres([(o.x1, o.y1, o.x2, o.y2) for o in objects]), polygon)
    return [o for o, ok in zip(objects, inside) if ok]


def zone_of(rule, site: Site) -> Zone:
    camera = site.camera(rule.camera)
    zone = camera.zone(rule.zone) if camera else None
    if zone is None:  # Site validation already refuses this; guards hand-built Sites
        raise ValueError(f"rule {rule.id!r}: zone {rule.zone!r} is not defined on camera {rule.camera!r}")
    return zone


class ZoneEvaluator(RuleEvaluator):
    """Base of the rules about watched objects in one zone of one camera."""

    def __init__(self, rule, site: Site):
        super().__init__(rule, site)
        self.zone = zone_of(rule, site)
        self.polygon = as_polygon(self.zone.polygon)
        self.sides = edges(self.polygon)
        self.box = bounds(self.polygon)
        self.classes = frozenset(rule.classes)

    @property
    def config(self):
        return (self.site_id, self.rule, self.zone)  # a moved polygon is a changed rule

    def sources(self) -> tuple[Source, ...]:
        return (("camera", self.rule.camera),)

    def present(self, objects: list[DetectedObject]) -> list[DetectedObject]:
        """The watched objects standing in the zone."""
        return in_zone(watched(objects, self.classes, self.rule.min_score), self.polygon, self.sides, self.box)

    @property
    def zone_name(self) -> str:
        return self.zone.name or self.zone.id
