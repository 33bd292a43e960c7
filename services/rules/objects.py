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


SMALL_FRAME = 8  # up to this many objects plain floats beat one numpy call (see geometry.SMALL_PAIRS)


def in_zone(objects: list[DetectedObject], polygon: np.ndarray, sides: list,
            box: tuple[float, float, float, float]) -> list[DetectedObject]:
    """The objects whose feet stand in ``polygon``, whose ``edges`` are ``sides`` and whose ``bounds``
    are ``box``."""
    if len(objects) <= SMALL_FRAME:  # a frame's few objects: plain floats, no numpy call
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


def standing(objects: list[DetectedObject], classes: frozenset[str], min_score: float, tracked: bool = False,
             within: tuple[float, float, float, float] | None = None) -> list[tuple[DetectedObject, float, float]]:
    """(object, x, y) for each watched object (with a track id, when ``tracked``; with its feet inside
    the box ``within``, x min, y min, x max, y max, when given): its feet, as ``bottom_centre``
    computes them. Every rule about where objects stand calls this for every frame, so the filters and
    the arithmetic (the same operations in the same order) run in one pass, with no call per object."""
    out = []
    for o in objects:
        if o.label in classes and o.score >= min_score and (o.track_id >= 0 or not tracked):
            x, y = (o.x1 + o.x2) * 0.5, (o.y1 if o.y1 >= o.y2 else o.y2)
            x, y = (0.0 if x < 0.0 else 1.0 if x > 1.0 else x), (0.0 if y < 0.0 else 1.0 if y > 1.0 else y)
            if within is None or (within[0] <= x <= within[2] and within[1] <= y <= within[3]):
                out.append((o, x, y))
    return out


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
        if len(objects) <= SMALL_FRAME:  # the usual frame: no numpy call (see in_zone)
            # Feet outside the zone's bounds are outside it: most objects skip the per-side test.
            sides = self.sides
            return [o for o, x, y in standing(objects, self.classes, self.rule.min_score, within=self.box)
                    if point_in(x, y, sides)]
        return in_zone(watched(objects, self.classes, self.rule.min_score), self.polygon, self.sides, self.box)

    @property
    def zone_name(self) -> str:
        return self.zone.name or self.zone.id
