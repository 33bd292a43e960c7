"""`aimass rules eval`: the rules' accuracy on scripted scenarios, measured through the real detector.

Each scenario (scenarios.yaml beside this file) is a small site: a camera with scripted actors
(photographed cut-outs, see aimass_gateway.scene), sensors with scripted values, the rules under test,
and the incidents the script implies (``expect``: per rule, the windows in seconds in which an incident
must start). The harness runs it offline in simulated time: render each frame, detect with the real
model, track, evaluate — the same code the workers run, without Kafka — then matches the incidents
that started against the expected windows. Precision and recall are reported per rule type.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from aimass.contracts import Detections, SensorReading
from aimass.site import Site
from aimass_detector.engine import Detector
from aimass_detector.tracker import Trackers
from aimass_gateway.scene import SceneRenderer
from aimass_gateway.simulate import sensor_value
from aimass_rules.engine import RuleEngine

SCENARIOS = Path(__file__).with_name("scenarios.yaml")


@dataclass
class Scenario:
    name: str
    site: Site
    duration_s: float
    start_ms: float
    expect: dict[str, list[tuple[float, float]]]  # rule id -> windows (s) where an incident must start
    drop_every: int = 0  # simulate a detector miss on every Nth frame
    sensor_stop_s: dict[str, float] = field(default_factory=dict)  # sensor -> goes silent from then on


@dataclass
class Outcome:
    scenario: str
    rule_id: str
    rule_type: str
    tp: int = 0
    fp: int = 0
    fn: int = 0
    starts_s: list[float] = field(default_factory=list)


def load_scenarios(path: Path = SCENARIOS) -> list[Scenario]:
    doc = yaml.safe_load(Path(path).read_text())
    base_camera = doc["camera"]
    out = []
    for sc in doc["scenarios"]:
        camera = {**base_camera, "scene": {"background": "yard", "actors": sc.get("actors", [])}}
        site = Site.model_validate({
            "site": {"id": "eval", "timezone": doc.get("timezone", "UTC")},
            "cameras": [camera], "sensors": sc.get("sensors", []), "rules": sc["rules"]})
        start = dt.datetime.fromisoformat(sc.get("start", doc["start"])).timestamp() * 1000
        expect = {rid: [tuple(w) for w in wins] for rid, wins in (sc.get("expect") or {}).items()}
        out.append(Scenario(sc["name"], site, float(sc["duration"]), start, expect, int(sc.get("drop_every", 0)),
                            {k: float(v) for k, v in (sc.get("sensor_stop") or {}).items()}))
    return out


def run_scenario(sc: Scenario, detector: Detector) -> list[Outcome]:
    engine = RuleEngine(sc.site, clock=lambda: 0.0)
    trackers = Trackers()
    cams = [(c, SceneRenderer(c)) for c in sc.site.cameras if c.scene and c.scene.actors]
    starts: dict[str, list[float]] = defaultdict(list)

    def collect(violations):
        for v in engine.follow(violations):  # correlation rules read the others' events, as in the worker
            if v.event == "start":
                starts[v.rule_id].append((v.at_ms - sc.start_ms) / 1000)

    events = []  # (t, kind, payload) in time order
    for cam, _ in cams:
        n = int(sc.duration_s * cam.fps)
        events += [(k / cam.fps, 0, (cam.id, k)) for k in range(n)]
    for s in sc.site.sensors:
        if s.simulate is None:
            continue
        stop = sc.sensor_stop_s.get(s.id, sc.duration_s)
        events += [(k * s.period_s, 1, (s.id, k)) for k in range(int(stop / s.period_s))]
    events += [(float(k), 2, None) for k in range(int(sc.duration_s) + 1)]
    renderers = dict((c.id, r) for c, r in cams)
    rng = random.Random(sc.name)
    for t, kind, payload in sorted(events, key=lambda e: (e[0], e[1])):
        at_ms = sc.start_ms + t * 1000
        if kind == 0:
            cam_id, k = payload
            image, _ = renderers[cam_id].render(t)
            objects = [] if sc.drop_every and k % sc.drop_every == sc.drop_every - 1 else detector.detect([image])[0]
            objects = trackers.update(cam_id, objects, at_ms, k)
            collect(engine.on_detections(Detections(site_id="eval", camera_id=cam_id, seq=k, captured_ms=at_ms,
                                                    width=image.shape[1], height=image.shape[0], model_name="eval",
                                                    model_version="1", objects=objects)))
        elif kind == 1:
            sensor_id, k = payload
            collect(engine.on_reading(SensorReading(site_id="eval", sensor_id=sensor_id, seq=k, captured_ms=at_ms,
                                                    value=sensor_value(sc.site.sensor(sensor_id), t, rng))))
        else:
            collect(engine.on_tick(at_ms))

    outcomes = []
    for rule in sc.site.rules:
        o = Outcome(sc.name, rule.id, rule.type, starts_s=sorted(starts.get(rule.id, [])))
        free = list(o.starts_s)
        for a, b in sc.expect.get(rule.id, []):
            hit = next((s for s in free if a <= s <= b), None)
            if hit is None:
                o.fn += 1
            else:
                o.tp += 1
                free.remove(hit)
        o.fp = len(free)
        outcomes.append(o)
    return outcomes


def score(outcomes: list[Outcome]) -> dict[str, dict[str, float]]:
    """Per rule type: tp, fp, fn, precision, recall (1.0 where there is nothing to get wrong)."""
    by_type: dict[str, dict[str, float]] = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0})
    for o in outcomes:
        for k in ("tp", "fp", "fn"):
            by_type[o.rule_type][k] += getattr(o, k)
    for s in by_type.values():
        s["precision"] = s["tp"] / (s["tp"] + s["fp"]) if s["tp"] + s["fp"] else 1.0
        s["recall"] = s["tp"] / (s["tp"] + s["fn"]) if s["tp"] + s["fn"] else 1.0
    return dict(by_type)


def evaluate(model_dir: Path, path: Path = SCENARIOS) -> tuple[list[Outcome], dict[str, dict[str, float]]]:
    detector = Detector.from_folder(model_dir)
    outcomes = [o for sc in load_scenarios(path) for o in run_scenario(sc, detector)]
    return outcomes, score(outcomes)
