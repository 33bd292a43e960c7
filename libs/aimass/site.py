"""The site file: one YAML document describing a site's cameras, zones, sensors and rules.

The gateway's simulator reads the ``scene`` and ``simulate`` parts; the rules worker reads zones and
rules. Validation errors name the file and the field and say what is allowed, because the person who
reads them is an operator editing YAML by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

IdStr = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Norm = Annotated[float, Field(ge=0.0, le=1.0)]
Point = tuple[Norm, Norm]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Zone(_Model):
    id: IdStr
    name: str = ""
    polygon: list[Point] = Field(min_length=3, description="normalised (x, y) corners, x right, y down")

    @field_validator("polygon")
    @classmethod
    def _has_area(cls, v: list[Point]) -> list[Point]:
        # Shoelace area; a zone whose corners all lie on one line can never contain anything.
        area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(v, v[1:] + v[:1]))
        if abs(area2) < 1e-9:
            raise ValueError("the polygon's corners lie on one line; a zone needs an area")
        return v


class ActorKeyframe(_Model):
    t: float = Field(ge=0, description="seconds since the scene started")
    x: Norm  # bottom centre of the actor, normalised
    y: Norm


class Actor(_Model):
    """A photographed object moved along a scripted path (the simulator's ground truth)."""

    id: IdStr
    asset: str = Field(description="a cut-out in aimass_gateway/assets, e.g. person_1, car_1")
    label: str = Field(description="what the detector should call it: person, vehicle, ...")
    height: float = Field(gt=0, le=1.0, description="height as a fraction of the frame height")
    path: list[ActorKeyframe] = Field(min_length=1)
    repeat_s: float | None = Field(default=None, gt=0, description="replay the path every N seconds")

    @field_validator("path")
    @classmethod
    def _times_increase(cls, v: list[ActorKeyframe]) -> list[ActorKeyframe]:
        for a, b in zip(v, v[1:]):
            if b.t <= a.t:
                raise ValueError(f"keyframe times must increase: {a.t} then {b.t}")
        return v


class Scene(_Model):
    background: str = Field(default="yard", description="a background in aimass_gateway/assets")
    actors: list[Actor] = []


class Line(_Model):
    """A tripwire. Walking from its first point to its second as drawn on the image, side A is on the
    left and side B on the right (for a line drawn left to right, A is above it and B below)."""

    id: IdStr
    name: str = ""
    points: tuple[Point, Point]

    @field_validator("points")
    @classmethod
    def _distinct(cls, v):
        if v[0] == v[1]:
            raise ValueError("a line needs two different points")
        return v


class Camera(_Model):
    id: IdStr
    name: str = ""
    width: int = Field(default=640, ge=32, le=4096)
    height: int = Field(default=480, ge=32, le=4096)
    fps: float = Field(default=5.0, gt=0, le=60)
    zones: list[Zone] = []
    lines: list[Line] = []
    scene: Scene | None = None  # used only by `aimass gateway simulate`

    def zone(self, zone_id: str) -> Zone | None:
        return next((z for z in self.zones if z.id == zone_id), None)

    def line(self, line_id: str) -> Line | None:
        return next((ln for ln in self.lines if ln.id == line_id), None)


class SensorStep(_Model):
    """From ``at`` seconds on, the simulated value moves to ``value`` (until the next step)."""

    at: float = Field(ge=0)
    value: float


class SensorSimulation(_Model):
    base: float
    noise: float = Field(default=0.0, ge=0)
    steps: list[SensorStep] = []


class Sensor(_Model):
    id: IdStr
    kind: str = Field(description="temperature, smoke, door, humidity, ...")
    unit: str = ""
    period_s: float = Field(default=1.0, gt=0)
    zone: str = ""
    simulate: SensorSimulation | None = None


Severity = Literal["low", "medium", "high", "critical"]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
HHMM = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")]


class Window(_Model):
    """A weekly time window in the site's time zone. ``from`` later than ``to`` runs past midnight
    (``from: "18:00", to: "07:00"`` is after hours); the days are the days the window starts on."""

    days: list[Day] = Field(default=["mon", "tue", "wed", "thu", "fri", "sat", "sun"], min_length=1)
    from_: HHMM = Field(alias="from")
    to: HHMM

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Rule(_Model):
    id: IdStr
    severity: Severity = "medium"
    cooldown_s: float = Field(default=30.0, ge=0, description="after an incident ends, ignore re-triggers for this long")
    enabled: bool = True
    schedule: list[Window] = Field(default=[], description="when the rule is armed; empty = always")
    update_s: float = Field(default=60.0, ge=0, description="while an incident lasts, an update event this often "
                                                            "(zone intrusion, occupancy, sensor threshold, stopped, "
                                                            "left behind); 0: none")


class ZoneIntrusionRule(_Rule):
    type: Literal["zone_intrusion"]
    camera: IdStr
    zone: IdStr
    classes: list[str] = Field(default=["person"], min_length=1)
    min_score: float = Field(default=0.4, ge=0, le=1)
    min_frames: int = Field(default=3, ge=1, description="frames with presence before it counts")
    max_gap_frames: int = Field(default=1, ge=0, description="frames without presence (detector misses) that "
                                                              "do not break the count towards min_frames")
    clear_frames: int = Field(default=5, ge=1, description="consecutive frames without presence that end it")


class _ObjectFilter(_Model):
    camera: IdStr
    classes: list[str] = Field(default=["person"], min_length=1)
    min_score: float = Field(default=0.4, ge=0, le=1)


class LineCrossingRule(_Rule, _ObjectFilter):
    """A tracked object's bottom centre crosses the line (an instantaneous event: a start only)."""

    type: Literal["line_crossing"]
    line: IdStr
    direction: Literal["a_to_b", "b_to_a", "either"] = "either"
    margin: float = Field(default=0.01, ge=0, le=0.2,
                          description="distance from the line (normalised) an object must reach on each side, "
                                      "so jitter on the line is not a crossing")


class DwellRule(_Rule, _ObjectFilter):
    """Loitering: one tracked object stays in the zone longer than ``seconds``."""

    type: Literal["dwell"]
    zone: IdStr
    seconds: float = Field(gt=0)
    clear_s: float = Field(default=1.5, gt=0, description="the object counts as gone after this long unseen in the zone")


class _AtRestRule(_Rule, _ObjectFilter):
    """A tracked object at rest in a zone (services/rules/stationary.py): it counts as at rest while its
    bottom centre stays within ``max_move`` of the mean of its positions since it came to rest."""

    zone: IdStr
    seconds: float = Field(gt=0)
    max_move: float = Field(default=0.03, gt=0, le=0.5,
                            description="how far (normalised) the bottom centre may wander and still be at "
                                        "rest; farther means the object moved and its clock starts again")
    clear_s: float = Field(default=2.0, gt=0, description="the object counts as gone after this long unseen")


class StoppedRule(_AtRestRule):
    """A vehicle stopped in a no-parking zone: one tracked object at rest in the zone for ``seconds``."""

    type: Literal["stopped"]
    classes: list[str] = Field(default=["vehicle"], min_length=1)


class LeftBehindRule(_AtRestRule):
    """An object left behind: one tracked object at rest in the zone for ``seconds`` with no object of
    ``owner_classes`` within ``owner_distance`` of it all that time."""

    type: Literal["left_behind"]
    classes: list[str] = Field(default=["bag"], min_length=1)
    owner_classes: list[str] = Field(default=["person"], min_length=1)
    owner_distance: float = Field(default=0.15, gt=0, le=1.5,
                                  description="an owner whose bottom centre is this close (normalised) to the "
                                              "object's attends it")

    @field_validator("owner_classes")
    @classmethod
    def _owners_are_not_watched(cls, v: list[str], info) -> list[str]:
        both = sorted(set(v) & set(info.data.get("classes", ())))
        if both:
            raise ValueError(f"{both} cannot be both the objects watched ('classes') and their owners")
        return v


class OccupancyRule(_Rule, _ObjectFilter):
    """Crowding: more than ``max_objects`` objects in the zone, held for ``hold_s``."""

    type: Literal["occupancy"]
    zone: IdStr
    max_objects: int = Field(ge=0)
    hold_s: float = Field(default=3.0, ge=0)
    max_gap_frames: int = Field(default=1, ge=0, description="frames at or under the limit (detector misses) that "
                                                              "do not break the count towards hold_s")
    clear_frames: int = Field(default=5, ge=1, description="consecutive frames at or under the limit that end it")


class SensorThresholdRule(_Rule):
    type: Literal["sensor_threshold"]
    sensor: IdStr
    above: float | None = None
    below: float | None = None
    min_readings: int = Field(default=1, ge=1, description="consecutive readings past the threshold before it counts")
    hysteresis: float | None = Field(
        default=None, ge=0,
        description="an incident ends only once the value is this far back inside the threshold; "
                    "default 2 % of the threshold's magnitude (capped at a quarter of the band when both bounds are set)",
    )

    @model_validator(mode="after")
    def _one_bound(self) -> "SensorThresholdRule":
        if self.above is None and self.below is None:
            raise ValueError("give 'above', 'below' or both")
        if self.above is not None and self.below is not None:
            if self.below >= self.above:
                raise ValueError(f"'below' ({self.below}) must be less than 'above' ({self.above}): "
                                 "the rule fires outside the band below..above")
            if self.hysteresis is not None and 2 * self.hysteresis >= self.above - self.below:
                raise ValueError(f"'hysteresis' ({self.hysteresis}) must be less than half the band "
                                 f"{self.below}..{self.above}, or the value could never count as back inside")
        return self


class SensorRateRule(_Rule):
    """The value changes faster than ``max_per_s`` (units per second), measured over ``window_s``."""

    type: Literal["sensor_rate"]
    sensor: IdStr
    max_per_s: float = Field(gt=0)
    window_s: float = Field(default=10.0, gt=0)
    min_readings: int = Field(default=1, ge=1)
    clear_readings: int = Field(default=3, ge=1)


class SensorStaleRule(_Rule):
    """No reading from the sensor for ``after_s`` seconds (judged on the rules worker's clock)."""

    type: Literal["sensor_stale"]
    sensor: IdStr
    after_s: float = Field(gt=0)


class CorrelationRule(_Rule):
    """``when: both``: two other rules start incidents within ``within_s`` of each other (in either
    order), e.g. a smoke sensor and a person seen in the server room. ``when: first_without_second``:
    the first starts one and the second does not within ``within_s`` (a door opened, nobody seen)."""

    type: Literal["correlation"]
    rules: tuple[IdStr, IdStr]
    within_s: float = Field(gt=0)
    when: Literal["both", "first_without_second"] = "both"


Rule = Annotated[Union[ZoneIntrusionRule, LineCrossingRule, DwellRule, StoppedRule, LeftBehindRule, OccupancyRule,
                       SensorThresholdRule, SensorRateRule, SensorStaleRule, CorrelationRule],
                 Field(discriminator="type")]


class SiteInfo(_Model):
    id: IdStr
    name: str = ""
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as Europe/Berlin or UTC") from None
        return v


class Site(_Model):
    site: SiteInfo
    cameras: list[Camera] = []
    sensors: list[Sensor] = []
    rules: list[Rule] = []

    @model_validator(mode="after")
    def _references(self) -> "Site":
        cams = {c.id: c for c in self.cameras}
        sensors = {s.id for s in self.sensors}
        for kind, ids in (("camera", [c.id for c in self.cameras]), ("sensor", [s.id for s in self.sensors]),
                          ("rule", [r.id for r in self.rules])):
            dup = {i for i in ids if ids.count(i) > 1}
            if dup:
                raise ValueError(f"{kind}s: duplicate {kind} id(s): {', '.join(sorted(dup))}")
        for i, r in enumerate(self.rules):
            if hasattr(r, "camera"):
                cam = cams.get(r.camera)
                if cam is None:
                    raise ValueError(f"rules.{i}.camera: rule {r.id!r}: camera {r.camera!r} is not defined; "
                                     f"cameras: {sorted(cams)}")
                if hasattr(r, "zone") and cam.zone(r.zone) is None:
                    raise ValueError(
                        f"rules.{i}.zone: rule {r.id!r}: zone {r.zone!r} is not defined on camera {r.camera!r}; "
                        f"zones: {[z.id for z in cam.zones]}"
                    )
                if hasattr(r, "line") and cam.line(r.line) is None:
                    raise ValueError(
                        f"rules.{i}.line: rule {r.id!r}: line {r.line!r} is not defined on camera {r.camera!r}; "
                        f"lines: {[ln.id for ln in cam.lines]}"
                    )
            elif isinstance(r, CorrelationRule):
                ids = {x.id for x in self.rules}
                missing = [x for x in r.rules if x not in ids or x == r.id]
                if missing:
                    raise ValueError(f"rules.{i}.rules: rule {r.id!r} correlates {missing}, which are not other "
                                     f"rules of this site; rules: {sorted(ids - {r.id})}")
                if r.rules[0] == r.rules[1]:
                    raise ValueError(f"rules.{i}.rules: rule {r.id!r} correlates {r.rules[0]!r} with itself; "
                                     "name two different rules")
                loop = _correlation_loop(self.rules, r.id)
                if loop:
                    raise ValueError(f"rules.{i}.rules: correlation rules read each other in a loop "
                                     f"({' -> '.join(loop)}); each would fire on the other's incidents")
            elif hasattr(r, "sensor") and r.sensor not in sensors:
                raise ValueError(f"rules.{i}.sensor: rule {r.id!r}: sensor {r.sensor!r} is not defined; "
                                 f"sensors: {sorted(sensors)}")
        return self

    def camera(self, camera_id: str) -> Camera | None:
        return next((c for c in self.cameras if c.id == camera_id), None)

    def sensor(self, sensor_id: str) -> Sensor | None:
        return next((s for s in self.sensors if s.id == sensor_id), None)


def _correlation_loop(rules: list, start: str) -> list[str]:
    """A cycle of correlation rules reading each other that passes through ``start``, or []."""
    reads = {r.id: list(r.rules) for r in rules if isinstance(r, CorrelationRule)}
    path: list[str] = []

    def walk(rid: str) -> bool:
        if rid in path:
            return rid == start
        path.append(rid)
        if any(walk(nxt) for nxt in reads.get(rid, ())):
            return True
        path.pop()
        return False

    return path + [start] if walk(start) else []


class SiteFileError(ValueError):
    """A site file that cannot be used; the message names the file and each bad field."""


def line_of(root: yaml.Node | None, loc: tuple) -> int | None:
    """1-based line of the deepest YAML node that ``loc`` (a pydantic error path) reaches. Path parts
    that are not in the document (a union's tag name, say) are skipped."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        else:
            nxt = None
        if nxt is not None:
            node = nxt
            line = node.start_mark.line + 1
    return line


def error_report(path: str, what: str, exc: ValidationError, root: yaml.Node | None,
                 located: Callable[[str], bool], footer: str = "") -> str:
    """``exc`` as a person reads it: each problem with its field path and its line in ``path``. A
    cross-field check has no path of its own; its message starts with one, used when ``located``
    accepts that head."""
    lines = [f"{path}: the {what} is not valid ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        loc = err["loc"]
        if not loc:
            head = msg.split(":", 1)[0]
            loc = tuple(int(p) if p.isdigit() else p for p in head.split(".")) if located(head) else ()
            where = ""
        else:
            where = ".".join(str(p) for p in loc) + ": "
        line = line_of(root, loc)
        lines.append(f"  - {path}:{line}: {where}{msg}" if line else f"  - {where}{msg}")
    if footer:
        lines.append(footer)
    return "\n".join(lines)


M = TypeVar("M", bound=BaseModel)


def parse_document(text: str, source: str, model: type[M], error: type[Exception], what: str, expected: str,
                   located: Callable[[str], bool], footer: str = "") -> M:
    """A YAML mapping validated as ``model``; anything wrong raises ``error`` naming ``source``, and for
    invalid fields their lines (see ``error_report``)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{source}: expected a mapping with {expected}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(error_report(source, what, exc, yaml.compose(text), located, footer)) from None


def parse_site(text: str, source: str = "<site>") -> Site:
    return parse_document(text, source, Site, SiteFileError, "site file", "'site', 'cameras', 'sensors', 'rules'",
                          located=lambda head: "." in head,
                          footer="  Fix the fields above and run `aimass rules validate FILE` to check again.")


def load_site(path: str | Path) -> Site:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SiteFileError(f"{p}: cannot read the site file: {exc.strerror}") from None
    return parse_site(text, str(p))
