"""Property tests for the rule types and the incident life cycle, through the RuleEngine.

Each test draws a random input stream (frames with objects in and out of a zone, tracks walking near
a tripwire, sensor values around thresholds) and checks what must hold for every stream: events of
one incident run start, update*, end under one violation_id; never two open incidents where the rule
allows one; nothing starts inside a cooldown; starts need enough evidence, and enough evidence does
start one; replays and redeliveries change nothing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from aimass.contracts import DetectedObject, Detections, SensorReading, Violation
from aimass.site import Site, Window
from aimass_rules.engine import RuleEngine
from aimass_rules.schedule import armed

T0 = 1_700_000_000_000.0
ZONE = [[0.2, 0.2], [0.6, 0.2], [0.6, 0.8], [0.2, 0.8]]
LINE = [[0.2, 0.6], [0.8, 0.6]]


def scaled(n: int) -> int:
    """n examples under the default profile (100), proportionally more under a longer one (conftest.py)."""
    return max(1, n * settings.default.max_examples // 100)


def make_site(*rules, line=LINE) -> Site:
    return Site.model_validate({
        "site": {"id": "s"},
        "cameras": [{"id": "c", "zones": [{"id": "z", "polygon": ZONE}], "lines": [{"id": "l", "points": line}]}],
        "sensors": [{"id": "t", "kind": "temperature", "unit": "C"}],
        "rules": list(rules),
    })


def engine(*rules, line=LINE) -> RuleEngine:
    return RuleEngine(make_site(*rules, line=line), clock=lambda: 0.0)


def foot(fx, fy, label="person", score=0.9, track=-1) -> DetectedObject:
    """An object whose bottom centre (where it stands) is (fx, fy)."""
    return DetectedObject(label, 0, score, fx - 0.05, fy - 0.3, fx + 0.05, fy, track)


def frame(seq, t, objects) -> Detections:
    return Detections(site_id="s", camera_id="c", seq=seq, captured_ms=t, width=640, height=480, model_name="m",
                      model_version="1", objects=list(objects))


def reading(seq, t, value) -> SensorReading:
    return SensorReading(site_id="s", sensor_id="t", seq=seq, captured_ms=t, value=value)


def times(steps) -> list[float]:
    return [T0 + s for s in np.cumsum(steps).tolist()]


def check_incidents(events: list[Violation], *, cooldown_s: float, update_s: float = 0.0, per_track: bool = False):
    """The life cycle every incident-raising rule shares. Returns the incidents still open."""
    open_: dict[str, tuple[object, Violation, float]] = {}  # violation_id -> (key, start, last update)
    done: set[str] = set()
    last_end: dict[object, float] = {}
    last_at = -math.inf
    for v in events:
        assert v.started_ms <= v.at_ms, v
        assert v.at_ms >= last_at, "events come in event-time order"
        last_at = v.at_ms
        key = v.track_id if per_track else None
        if v.event == "start":
            assert v.violation_id not in open_ and v.violation_id not in done, f"violation_id reused: {v}"
            assert all(k != key for k, _, _ in open_.values()), f"a second incident opened: {v}"
            if key in last_end:
                assert v.at_ms >= last_end[key] + cooldown_s * 1000, f"started inside the cooldown: {v}"
            open_[v.violation_id] = (key, v, v.started_ms)
            continue
        assert v.violation_id in open_, f"{v.event} without an open incident: {v}"
        k, start, last_update = open_[v.violation_id]
        assert (v.started_ms, v.rule_id, v.track_id) == (start.started_ms, start.rule_id, start.track_id)
        if v.event == "update":
            assert update_s > 0 and v.at_ms - last_update >= update_s * 1000
            open_[v.violation_id] = (k, start, v.at_ms)
        else:
            assert v.event == "end"
            del open_[v.violation_id]
            done.add(v.violation_id)
            last_end[k] = v.at_ms
    return open_


def per_frame(eng: RuleEngine, msgs) -> list[list[Violation]]:
    return [eng.on_detections(m) if isinstance(m, Detections) else eng.on_reading(m) for m in msgs]


cooldowns = st.sampled_from([0.0, 0.3, 1.0, 3.0])
update_every = st.sampled_from([0.0, 0.5, 1.0, 60.0])


@st.composite
def alternating_runs(draw, max_runs=14) -> list[bool]:
    """Hits and misses in alternating runs, short runs (detector misses, brief visits) drawn often."""
    first = draw(st.booleans())
    lengths = draw(st.lists(st.one_of(st.integers(1, 3), st.integers(1, 10)), min_size=1, max_size=max_runs))
    return [(k % 2 == 0) == first for k, n in enumerate(lengths) for _ in range(n)]


@st.composite
def event_times(draw, n, lo=50, hi=800) -> list[float]:
    """n increasing capture times: a regular rate (so that times land exactly on cooldown and hold
    boundaries) or irregular steps."""
    regular = st.sampled_from([100, 200, 250, 500]).map(lambda step: [step] * n)
    return times(draw(st.one_of(regular, st.lists(st.integers(lo, hi), min_size=n, max_size=n))))


in_zone = st.tuples(st.floats(0.25, 0.55), st.floats(0.25, 0.75))
out_of_zone = st.one_of(st.tuples(st.floats(0.0, 1.0), st.floats(0.85, 1.0)),
                        st.tuples(st.floats(0.65, 1.0), st.floats(0.0, 1.0)),
                        st.tuples(st.floats(0.0, 0.15), st.floats(0.0, 1.0)))
MIN_SCORE = 0.4
# Objects that never count for a person rule with min_score 0.4: outside, another class, or unsure.
distractor = st.one_of(
    st.builds(lambda p, s: foot(*p, score=s), out_of_zone, st.floats(0.0, 1.0)),
    st.builds(lambda p, s: foot(*p, label="vehicle", score=s), in_zone, st.floats(0.0, 1.0)),
    st.builds(lambda p, s: foot(*p, score=s), in_zone, st.floats(0.0, MIN_SCORE, exclude_max=True)),
)
intruder = st.builds(lambda p, s: foot(*p, score=s), in_zone, st.floats(MIN_SCORE, 1.0))


class Lasting:
    """The documented life cycle of a lasting incident (evaluator.py, README), written out plainly:
    the reference the rule types are checked against, one observation at a time."""

    def __init__(self, cooldown_s: float, update_s: float):
        self.cooldown_ms, self.update_ms = cooldown_s * 1000, update_s * 1000
        self.open, self.started, self.last_update, self.clears = False, None, None, 0
        self.cooldown_until = -math.inf

    def start(self, t, started):
        if t < self.cooldown_until:
            return False
        self.open, self.started, self.last_update, self.clears = True, started, started, 0
        return True

    def update_due(self, t) -> bool:  # every update_s of event time after the start; 0: never
        if self.update_ms > 0 and t - self.last_update >= self.update_ms:
            self.last_update = t
            return True
        return False

    def end(self, t):
        self.open, self.cooldown_until = False, t + self.cooldown_ms


def events_of(out: list[list[Violation]], value="score") -> list[list[tuple]]:
    return [[(v.event, v.started_ms, getattr(v, value)) for v in vs] for vs in out]


# ---------------------------------------------------------------------------------------------------
# zone_intrusion: the TriggerState life cycle with gaps, clears, cooldown and updates


@given(alternating_runs(), st.integers(1, 4), st.integers(0, 2), st.integers(1, 4), cooldowns, update_every, st.data())
@settings(max_examples=scaled(70))
def test_zone_intrusion_follows_its_documented_life_cycle(hits, min_frames, max_gap, clear_frames, cooldown_s,
                                                           update_s, data):
    ts = data.draw(event_times(len(hits)))
    frames, best = [], []
    for i, hit in enumerate(hits):
        people = data.draw(st.lists(intruder, min_size=1, max_size=3)) if hit else []
        objs = people + data.draw(st.lists(distractor, max_size=2))
        best.append(max((o.score for o in people), default=None))
        frames.append(frame(i, ts[i], objs if i % 2 else objs[::-1]))  # the detector's order means nothing
    eng = engine({"id": "r", "type": "zone_intrusion", "camera": "c", "zone": "z", "min_score": MIN_SCORE,
                  "min_frames": min_frames, "max_gap_frames": max_gap, "clear_frames": clear_frames,
                  "cooldown_s": cooldown_s, "update_s": update_s})
    out = per_frame(eng, frames)
    events = [v for vs in out for v in vs]
    check_incidents(events, cooldown_s=cooldown_s, update_s=update_s)
    assert all(v.source_seq == i and v.at_ms == ts[i] for i, vs in enumerate(out) for v in vs)

    # The reference: min_frames frames with presence start an incident, up to max_gap_frames missed
    # frames in between neither break nor extend the count; clear_frames frames in a row without
    # presence end it; no start within cooldown_s after an end; updates every update_s.
    ref, count, gap, streak_start, peak = Lasting(cooldown_s, update_s), 0, 0, None, None
    expected = []
    for i, t in enumerate(ts):
        got = []
        if not ref.open:
            if hits[i]:
                streak_start = t if count == 0 else streak_start
                count, gap = count + 1, 0
                if count >= min_frames and ref.start(t, streak_start):
                    peak = best[i]
                    got.append(("start", streak_start, best[i]))
            else:
                gap += 1
                if gap > max_gap:
                    count, gap = 0, 0
        elif hits[i]:
            ref.clears, peak = 0, max(peak, best[i])
            if ref.update_due(t):
                got.append(("update", ref.started, best[i]))
        else:
            ref.clears += 1
            if ref.clears >= clear_frames:
                got.append(("end", ref.started, peak))  # an end carries the incident's best score
                ref.end(t)
                count = 0
        expected.append(got)
    assert events_of(out) == expected

    # Two bounds that need no reference: each start takes min_frames hits of its own, and when an
    # end needs more misses than a gap may hold, one streak of hits starts at most one incident.
    starts = sum(v.event == "start" for v in events)
    assert starts * min_frames <= sum(hits)
    if clear_frames > max_gap:
        streaks, n, misses = [], 0, 0
        for h in hits + [False] * (max_gap + 1):
            n, misses = (n + 1, 0) if h else (n, misses + 1)
            if misses > max_gap and n:
                streaks.append(n)
                n = 0
        assert starts <= sum(1 for n in streaks if n >= min_frames)


# ---------------------------------------------------------------------------------------------------
# occupancy


@given(alternating_runs(), st.integers(0, 2), st.sampled_from([0.0, 0.2, 0.5, 1.0]), st.integers(1, 3), cooldowns,
       update_every, st.integers(0, 2), st.data())
@settings(max_examples=scaled(70))
def test_occupancy_follows_its_documented_life_cycle(over, max_objects, hold_s, clear_frames, cooldown_s, update_s,
                                                      max_gap, data):
    ts = data.draw(event_times(len(over)))
    counts = [data.draw(st.integers(max_objects + 1, max_objects + 3) if o else st.integers(0, max_objects))
              for o in over]
    frames = [frame(i, ts[i], data.draw(st.lists(intruder, min_size=c, max_size=c))
                    + data.draw(st.lists(distractor, max_size=2))) for i, c in enumerate(counts)]
    eng = engine({"id": "r", "type": "occupancy", "camera": "c", "zone": "z", "min_score": MIN_SCORE,
                  "max_objects": max_objects, "hold_s": hold_s, "clear_frames": clear_frames,
                  "cooldown_s": cooldown_s, "update_s": update_s, "max_gap_frames": max_gap})
    out = per_frame(eng, frames)
    check_incidents([v for vs in out for v in vs], cooldown_s=cooldown_s, update_s=update_s)

    # The reference: frames over the limit for hold_s (event time) start it, up to max_gap_frames frames
    # in a row at or under the limit in between do not break the run; clear_frames frames in a row at
    # or under the limit end it; the end carries the peak count.
    ref, run_start, gap, peak, expected = Lasting(cooldown_s, update_s), None, 0, 0, []
    for i, t in enumerate(ts):
        got = []
        if not ref.open:
            if over[i]:
                run_start, gap = (t if run_start is None else run_start), 0
            elif run_start is not None:
                gap += 1
                if gap > max_gap:
                    run_start, gap = None, 0
            if over[i] and t - run_start >= hold_s * 1000 and ref.start(t, run_start):
                peak = counts[i]
                got.append(("start", run_start, counts[i]))
        elif over[i]:
            ref.clears, peak = 0, max(peak, counts[i])
            if ref.update_due(t):
                got.append(("update", ref.started, counts[i]))
        else:
            ref.clears += 1
            if ref.clears >= clear_frames:
                got.append(("end", ref.started, peak))
                ref.end(t)
                run_start, gap = None, 0
        expected.append(got)
    assert events_of(out, "value") == expected


# ---------------------------------------------------------------------------------------------------
# sensor_threshold


@st.composite
def threshold_rules(draw):
    above, below = draw(st.sampled_from([(30.0, 10.0), (30.0, None), (None, 10.0), (-5.0, -20.0)]))
    band = above - below if above is not None and below is not None else math.inf
    hysteresis = draw(st.one_of(st.none(), st.sampled_from([0.0, 0.5, 2.0]), st.floats(0.0, 20.0)))
    if hysteresis is not None and 2 * hysteresis >= band:
        hysteresis = None  # the site file refuses it
    rule = {"id": "r", "type": "sensor_threshold", "sensor": "t", "min_readings": draw(st.integers(1, 3)),
            "cooldown_s": draw(cooldowns), "update_s": draw(update_every)}
    rule |= {k: v for k, v in (("above", above), ("below", below), ("hysteresis", hysteresis)) if v is not None}
    return rule


def margins(rule) -> tuple[float, float]:
    """The hysteresis as the README and the site file describe it."""
    above, below, h = rule.get("above"), rule.get("below"), rule.get("hysteresis")

    def one(threshold):
        if threshold is None:
            return 0.0
        if h is not None:
            return h
        m = abs(threshold) * 0.02
        return min(m, (above - below) / 4) if above is not None and below is not None else m
    return one(above), one(below)


def sensor_values(rule):
    """Values everywhere, with the thresholds and hysteresis edges themselves drawn often."""
    edges = [0.0]
    h_above, h_below = margins(rule)
    for bound, sign, h in ((rule.get("above"), -1, h_above), (rule.get("below"), 1, h_below)):
        if bound is not None:
            edges += [bound, bound + sign * h, bound + sign * h / 2, bound - sign * 1.0]
    return st.one_of(st.sampled_from(edges), st.floats(-40.0, 50.0))


@given(threshold_rules(), st.data())
def test_sensor_threshold_follows_its_documented_life_cycle_and_hysteresis(rule, data):
    values = data.draw(st.lists(sensor_values(rule), min_size=1, max_size=60))
    ts = data.draw(event_times(len(values), 100, 3000))
    above, below = rule.get("above"), rule.get("below")
    h_above, h_below = margins(rule)
    out = per_frame(engine(rule), [reading(i, t, x) for i, (t, x) in enumerate(zip(ts, values))])
    check_incidents([v for vs in out for v in vs], cooldown_s=rule["cooldown_s"], update_s=rule["update_s"])
    assert all(v.value == values[i] for i, vs in enumerate(out) for v in vs)

    # The reference: min_readings readings in a row past a threshold start it; the first reading
    # back inside by the hysteresis margin ends it; readings in between do neither (and break a streak).
    ref, count, streak_start, expected = Lasting(rule["cooldown_s"], rule["update_s"]), 0, None, []
    for t, x in zip(ts, values):
        breach = (above is not None and x > above) or (below is not None and x < below)
        inside = (above is None or x <= above - h_above) and (below is None or x >= below + h_below)
        got = []
        if not ref.open:
            count = count + 1 if breach else 0
            streak_start = t if count == 1 else streak_start
            if count >= rule["min_readings"] and ref.start(t, streak_start):
                got.append(("start", streak_start, x))
        elif inside:
            got.append(("end", ref.started, x))
            ref.end(t)
            count = 0
        elif ref.update_due(t):
            got.append(("update", ref.started, x))
        expected.append(got)
    assert events_of(out, "value") == expected


@given(st.sampled_from([0.0, 1.0, 3.0]), st.data())
def test_sensor_threshold_value_wiggling_in_the_hysteresis_band_never_ends_an_incident(h, data):
    rule = {"id": "r", "type": "sensor_threshold", "sensor": "t", "above": 30.0, "cooldown_s": 0, "update_s": 0}
    if h:
        rule["hysteresis"] = h
    h_above = h or 30.0 * 0.02
    eng = engine(rule)
    assert [v.event for v in eng.on_reading(reading(0, T0, 31.0))] == ["start"]
    # Anything strictly above the margin: in the band, on the threshold, past it again.
    wiggle = data.draw(st.lists(st.one_of(st.floats(30.0 - h_above, 40.0, exclude_min=True), st.just(30.0)),
                                min_size=1, max_size=40))
    for i, x in enumerate(wiggle, 1):
        assert eng.on_reading(reading(i, T0 + i * 1000, x)) == [], x
    [end] = eng.on_reading(reading(len(wiggle) + 1, T0 + (len(wiggle) + 1) * 1000, 30.0 - h_above))
    assert end.event == "end"


# ---------------------------------------------------------------------------------------------------
# sensor_rate


@given(st.floats(0.1, 5.0), st.one_of(st.sampled_from([0.5, 1.0, 2.0]), st.floats(0.5, 10.0)), st.integers(1, 3),
       st.integers(1, 3), cooldowns, st.data())
def test_sensor_rate_follows_its_documented_life_cycle(max_per_s, window_s, min_readings, clear_readings,
                                                       cooldown_s, data):
    # A wandering value whose rate of change is sometimes under the limit and sometimes over it.
    steps = data.draw(st.lists(st.one_of(st.just(0.0), st.floats(-3.0, 3.0)), min_size=8, max_size=50))
    values = np.cumsum(steps).tolist()
    ts = data.draw(event_times(len(values), 100, 3000))
    rule = {"id": "r", "type": "sensor_rate", "sensor": "t", "max_per_s": max_per_s, "window_s": window_s,
            "min_readings": min_readings, "clear_readings": clear_readings, "cooldown_s": cooldown_s}
    out = per_frame(engine(rule), [reading(i, t, x) for i, (t, x) in enumerate(zip(ts, values))])
    check_incidents([v for vs in out for v in vs], cooldown_s=cooldown_s)

    # The reference: a reading's rate is its change from the oldest reading at most window_s older;
    # min_readings fast readings in a row start it, clear_readings slow ones in a row end it.
    ref, count, streak_start, expected = Lasting(cooldown_s, 0), 0, None, []
    for i, t in enumerate(ts):
        j = next(j for j in range(i + 1) if t - ts[j] <= window_s * 1000)
        rate = (values[i] - values[j]) / ((t - ts[j]) / 1000) if j < i else None
        fast = rate is not None and abs(rate) > max_per_s
        got = []
        if not ref.open:
            count = count + 1 if fast else 0
            streak_start = t if count == 1 else streak_start
            if count >= min_readings and ref.start(t, streak_start):
                got.append(("start", streak_start, values[i]))
        elif fast:
            ref.clears = 0
        elif rate is not None:
            ref.clears += 1
            if ref.clears >= clear_readings:
                got.append(("end", ref.started, values[i]))
                ref.end(t)
                count = 0
        expected.append(got)
    assert events_of(out, "value") == expected


@given(st.floats(0.5, 5.0), st.floats(0.0, 0.98), st.floats(1.02, 3.0), st.integers(1, 3), st.sampled_from([1, -1]))
def test_sensor_rate_steady_slopes(max_per_s, slow, fast, min_readings, sign):
    rule = {"id": "r", "type": "sensor_rate", "sensor": "t", "max_per_s": max_per_s, "window_s": 5,
            "min_readings": min_readings, "clear_readings": 2, "cooldown_s": 0}
    for factor, fires in ((slow, False), (fast, True)):
        eng = engine(rule)
        slope = sign * factor * max_per_s  # per second, readings every second
        events = [v.event for i in range(12) for v in eng.on_reading(reading(i, T0 + i * 1000, 20 + slope * i))]
        assert events == (["start"] if fires else [])


# ---------------------------------------------------------------------------------------------------
# dwell


@given(st.integers(1, 3), st.sampled_from([0.5, 1.0, 2.0]), st.sampled_from([0.3, 1.0]), cooldowns, st.data())
@settings(max_examples=scaled(70))
def test_dwell_life_cycle(n_tracks, seconds, clear_s, cooldown_s, data):
    n = data.draw(st.integers(1, 60))
    ts = data.draw(event_times(n, 50, 600))
    # Per track and frame: "in" the zone, "out" of it (seen elsewhere), or not detected; in runs.
    where = {}
    for tid in range(1, n_tracks + 1):
        inside = (data.draw(alternating_runs()) + [False] * n)[:n]
        where[tid] = ["in" if x else data.draw(st.sampled_from(["out", "gone"])) for x in inside]
    frames = []
    for i in range(n):
        objs = [foot(*data.draw(in_zone if where[tid][i] == "in" else out_of_zone), track=tid)
                for tid in where if where[tid][i] != "gone"]
        objs += [foot(0.4, 0.5, track=-1)]  # untracked: never counts for dwell
        frames.append(frame(i, ts[i], objs))
    rule = {"id": "r", "type": "dwell", "camera": "c", "zone": "z", "seconds": seconds, "clear_s": clear_s,
            "cooldown_s": cooldown_s}
    out = per_frame(engine(rule), frames)
    events = [v for vs in out for v in vs]
    check_incidents(events, cooldown_s=cooldown_s, per_track=True)

    for tid, w in where.items():
        seen = [ts[i] for i in range(n) if w[i] == "in"]
        if not seen or seen[-1] - seen[0] < seconds * 1000:
            assert not [v for v in events if v.track_id == tid], f"track {tid} was in the zone < {seconds} s"

    # The reference, per track: its clock starts when it is first seen in the zone and keeps running
    # while it is seen there again within clear_s; seconds on that clock start an incident (unless the
    # track is cooling down); clear_s unseen in the zone ends the stay, and the incident with it.
    first: dict[int, float] = {}  # track -> start of its stay
    last: dict[int, float] = {}  # track -> last seen in the zone
    is_open: set[int] = set()
    cooldown_until: dict[int, float] = {}
    for i, t in enumerate(ts):
        expected = []
        for tid in where:
            if where[tid][i] == "in":
                first.setdefault(tid, t)
                last[tid] = t
                if (tid not in is_open and t >= cooldown_until.get(tid, -math.inf)
                        and t - first[tid] >= seconds * 1000):
                    is_open.add(tid)
                    expected.append(("start", tid, first[tid]))
            elif tid in last and t - last[tid] > clear_s * 1000:
                if tid in is_open:
                    expected.append(("end", tid, first[tid]))
                    is_open.discard(tid)
                    cooldown_until[tid] = t + cooldown_s * 1000
                del first[tid], last[tid]
        assert sorted((v.event, v.track_id, v.started_ms) for v in out[i]) == sorted(expected), i


def test_dwell_two_people_entering_together_are_two_incidents():
    # Found by test_dwell_life_cycle: two tracks first seen in the zone in the same frame got the same
    # violation_id (it was keyed by zone and first frame only), so the sink folded the two incidents.
    # line_crossing had the same flaw for two tracks crossing in one frame
    # (test_crossings_are_one_incident_each_and_respect_the_cooldown_per_track).
    eng = engine({"id": "r", "type": "dwell", "camera": "c", "zone": "z", "seconds": 1, "clear_s": 1})
    events = [v for i in range(8) for v in eng.on_detections(
        frame(i, T0 + i * 200, [foot(0.3, 0.5, track=1), foot(0.5, 0.5, track=2)]))]
    assert [(v.event, v.track_id) for v in events] == [("start", 1), ("start", 2)]
    assert events[0].violation_id != events[1].violation_id


# ---------------------------------------------------------------------------------------------------
# line_crossing


@st.composite
def lines(draw):
    """A tripwire centred near the middle of the image; ``to_image(u, v)`` places a point u along it
    (-1 at the first end, +1 at the second) and v across it (v > 0: side B, as side_of signs it)."""
    cx, cy = draw(st.floats(0.4, 0.6)), draw(st.floats(0.4, 0.6))
    angle, half = draw(st.floats(0, 2 * math.pi)), draw(st.floats(0.1, 0.2))
    d = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-d[1], d[0]])  # the right of the line as drawn on an image (y down)
    p0, p1 = np.array([cx, cy]) - half * d, np.array([cx, cy]) + half * d

    def to_image(u, v):
        return tuple((np.array([cx, cy]) + u * half * d + v * normal).tolist())
    return [p0.tolist(), p1.tolist()], to_image


def crossing_rule(direction, margin=0.01, cooldown_s=0.0):
    return {"id": "x", "type": "line_crossing", "camera": "c", "line": "l", "direction": direction,
            "margin": margin, "cooldown_s": cooldown_s}


def walk(line, rule, paths: dict[int, list]) -> list[Violation]:
    """Feed each track's path of image points (None: not detected), one frame per step."""
    eng = engine(rule, line=line)
    n = max(len(p) for p in paths.values())
    out = []
    for i in range(n):
        objs = [foot(*p[i], track=tid) for tid, p in paths.items() if i < len(p) and p[i] is not None]
        out += eng.on_detections(frame(i, T0 + i * 200, objs))
    return out


@given(lines(), st.floats(0.005, 0.1), st.data())
def test_a_track_that_never_reaches_margin_on_the_other_side_raises_nothing(line, margin, data):
    pts, to_image = line
    # u anywhere (also past the ends), v on side A or in the band short of margin on side B.
    step = st.one_of(st.none(), st.builds(to_image, st.floats(-1.5, 1.5), st.floats(-0.15, 0.9 * margin)))
    n_tracks = data.draw(st.integers(1, 3))
    paths = {tid: data.draw(st.lists(step, min_size=1, max_size=30)) for tid in range(1, n_tracks + 1)}
    assert walk(pts, crossing_rule("either", margin), paths) == []


@given(lines(), st.sampled_from([1.05, -1.05]), st.data())
def test_walking_past_the_end_of_the_line_is_not_a_crossing(line, end, data):
    pts, to_image = line
    beyond = st.floats(1.05, 1.4) if end > 0 else st.floats(-1.4, -1.05)
    step = st.builds(to_image, beyond, st.floats(-0.1, 0.1))  # stays inside the image
    paths = {1: data.draw(st.lists(step, min_size=2, max_size=30))}
    assert walk(pts, crossing_rule("either"), paths) == []


@given(lines(), st.floats(0.0, 0.05), st.data())
def test_a_one_way_walk_fires_its_direction_once_and_never_the_other(line, margin, data):
    pts, to_image = line
    vs = sorted(data.draw(st.lists(st.floats(-0.1, 0.1), min_size=2, max_size=25)))  # side A towards side B
    assume(all(abs(abs(v) - margin) > 1e-9 for v in vs))  # exactly at the margin: rounding decides
    # The step that crosses (from the last point at least margin away on side A to the first such
    # point on side B) passes through the segment; before and after it the track may be anywhere
    # along the line, also past its ends.
    last_a = max((k for k, v in enumerate(vs) if v <= -margin), default=None)
    first_b = min((k for k, v in enumerate(vs) if v >= margin), default=None)
    path = [to_image(data.draw(st.floats(-0.8, 0.8) if k in (last_a, first_b) else st.floats(-1.4, 1.4)), v)
            for k, v in enumerate(vs)]
    crosses = last_a is not None and first_b is not None
    for direction, path_ in (("a_to_b", path), ("b_to_a", path[::-1])):
        same = walk(pts, crossing_rule(direction, margin), {7: path_})
        other = walk(pts, crossing_rule("b_to_a" if direction == "a_to_b" else "a_to_b", margin), {7: path_})
        either = walk(pts, crossing_rule("either", margin), {7: path_})
        assert other == []
        assert len(same) == (1 if crosses else 0)
        assert [(v.source_seq, v.track_id) for v in either] == [(v.source_seq, v.track_id) for v in same]


@given(lines(), st.floats(0.0, 0.05), st.sampled_from([1, -1]), st.data())
def test_a_crossing_is_judged_from_the_last_position_before_it(line, margin, end, data):
    # The track comes along side A from past one end of the line, hugging it, then steps across the
    # middle to side B: one crossing. (Judged from where it was first seen, the step would seem to
    # pass the line's end.)
    pts, to_image = line
    near = st.floats(margin + 0.001, 2 * margin + 0.005).map(lambda d: -d)
    approach = data.draw(st.lists(st.builds(to_image, st.floats(1.05, 1.4).map(lambda u: end * u), near),
                                  min_size=1, max_size=5))
    path = approach + [to_image(data.draw(st.floats(-0.5, 0.5)), data.draw(near)),
                       to_image(data.draw(st.floats(-0.5, 0.5)), data.draw(st.floats(margin + 0.01, 0.12)))]
    events = walk(pts, crossing_rule("a_to_b", margin), {3: path})
    assert [(v.source_seq, v.track_id) for v in events] == [(len(path) - 1, 3)]


def _paths(data, n_tracks, n):
    point = st.tuples(st.floats(0.0, 1.0), st.floats(0.3, 0.9))  # y spread around the line at 0.6
    return {tid: data.draw(st.lists(st.one_of(st.none(), point, point), min_size=n, max_size=n))
            for tid in range(1, n_tracks + 1)}


@given(st.integers(1, 3), st.integers(2, 30), st.floats(0.0, 0.05), st.data())
@settings(max_examples=scaled(60))
def test_either_is_a_to_b_plus_b_to_a_without_cooldown(n_tracks, n, margin, data):
    paths = _paths(data, n_tracks, n)
    got = {d: [(v.source_seq, v.track_id) for v in walk(LINE, crossing_rule(d, margin), paths)]
           for d in ("either", "a_to_b", "b_to_a")}
    assert sorted(got["a_to_b"] + got["b_to_a"]) == sorted(got["either"])


@given(st.integers(1, 3), st.integers(2, 30), st.sampled_from([0.0, 0.5, 2.0]), st.data())
@settings(max_examples=scaled(60))
def test_crossings_are_one_incident_each_and_respect_the_cooldown_per_track(n_tracks, n, cooldown_s, data):
    paths = _paths(data, n_tracks, n)
    events = walk(LINE, crossing_rule("either", cooldown_s=cooldown_s), paths)
    assert all(v.event == "start" and v.started_ms == v.at_ms for v in events)
    # One violation_id per crossing, also for two tracks crossing in the same frame.
    assert len({v.violation_id for v in events}) == len(events)
    last: dict[int, float] = {}
    for v in events:
        assert v.track_id in paths
        if v.track_id in last:
            assert v.at_ms - last[v.track_id] >= cooldown_s * 1000
        last[v.track_id] = v.at_ms


# ---------------------------------------------------------------------------------------------------
# the engine: replays, duplicates, redeliveries

ALL_RULES = [
    {"id": "zi", "type": "zone_intrusion", "camera": "c", "zone": "z", "min_frames": 2, "clear_frames": 2,
     "cooldown_s": 0.5, "update_s": 1},
    {"id": "occ", "type": "occupancy", "camera": "c", "zone": "z", "max_objects": 1, "hold_s": 0.2,
     "clear_frames": 2, "cooldown_s": 0},
    {"id": "dw", "type": "dwell", "camera": "c", "zone": "z", "seconds": 0.6, "clear_s": 0.5, "cooldown_s": 1},
    {"id": "lc", "type": "line_crossing", "camera": "c", "line": "l", "cooldown_s": 0.5},
    {"id": "th", "type": "sensor_threshold", "sensor": "t", "above": 30, "min_readings": 2, "update_s": 1,
     "cooldown_s": 0.5},
    {"id": "rate", "type": "sensor_rate", "sensor": "t", "max_per_s": 3, "window_s": 2, "clear_readings": 2},
]


@st.composite
def streams(draw):
    """Detections and readings interleaved, each source with increasing seq and capture time."""
    n = draw(st.integers(1, 50))
    kinds = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    ts = times(draw(st.lists(st.integers(20, 400), min_size=n, max_size=n)))
    point = st.tuples(st.floats(0.1, 0.7), st.floats(0.3, 0.9))
    msgs, seq = [], {"c": 0, "t": 0}
    for is_frame, t in zip(kinds, ts):
        if is_frame:
            tracks = draw(st.lists(st.integers(1, 4), max_size=3, unique=True))
            objs = [foot(*draw(point), score=draw(st.floats(0.3, 1.0)), track=tid) for tid in tracks]
            msgs.append(frame(seq["c"], t, objs))
            seq["c"] += 1
        else:
            msgs.append(reading(seq["t"], t, draw(st.floats(20, 40))))
            seq["t"] += 1
    return msgs


def run_engine(msgs) -> list[Violation]:
    eng = engine(*ALL_RULES)
    return [v for vs in per_frame(eng, msgs) for v in vs]


@given(streams())
@settings(max_examples=scaled(30))
def test_replay_to_a_fresh_engine_gives_the_same_events_and_ids(msgs):
    first = run_engine(msgs)
    assert run_engine(msgs) == first
    for rid in {v.rule_id for v in first} - {"lc"}:  # crossings are instantaneous: start events only
        check_incidents([v for v in first if v.rule_id == rid], per_track=rid == "dw",
                        cooldown_s=next(r.get("cooldown_s", 30.0) for r in ALL_RULES if r["id"] == rid),
                        update_s=next(r.get("update_s", 60) for r in ALL_RULES if r["id"] == rid))


@given(streams(), st.data())
@settings(max_examples=scaled(40))
def test_duplicates_and_redeliveries_change_nothing(msgs, data):
    once = run_engine(msgs)
    assert run_engine([m for m in msgs for _ in (0, 1)]) == once  # every message delivered twice
    # After each message, maybe redeliver some earlier ones (a consumer that re-read from an old offset).
    noisy = []
    for i, m in enumerate(msgs):
        noisy.append(m)
        noisy += data.draw(st.lists(st.sampled_from(msgs[: i + 1]), max_size=2))
    assert run_engine(noisy) == once


def test_redelivery_across_a_quick_gateway_restart_changes_nothing():
    rule = {"id": "r", "type": "zone_intrusion", "camera": "c", "zone": "z", "min_frames": 4, "max_gap_frames": 0}
    inside = [foot(0.4, 0.5)]
    # The gateway sent seq 10 and 11, restarted a moment later and began again at seq 0.
    msgs = [frame(10, T0, inside), frame(11, T0 + 200, inside), frame(0, T0 + 1400, inside)]
    once = [v for m in msgs for v in engine(rule).on_detections(m)]
    eng = engine(rule)
    # The consumer re-reads the last two messages (a rebalance before the offsets were committed).
    again = [v for m in msgs + msgs[1:] for v in eng.on_detections(m)]
    assert once == []  # three frames in the zone: fewer than min_frames
    assert again == once  # but the redelivered seq 11 (higher than 0) and seq 0 (later than 11) both count


# ---------------------------------------------------------------------------------------------------
# sensor_stale


@given(st.floats(1.0, 10.0), st.lists(st.integers(100, 12_000), min_size=1, max_size=30))
def test_sensor_stale_fires_once_per_silence_longer_than_after_s(after_s, gaps):
    eng = engine({"id": "st", "type": "sensor_stale", "sensor": "t", "after_s": after_s})
    t, seq = T0, 0
    assert eng.on_tick(t) == [] and eng.on_reading(reading(seq, t, 1.0)) == []
    for gap in gaps:
        ticks = np.arange(t + 500, t + gap, 500).tolist()  # the worker's clock, every 0.5 s
        started = [v for tick in ticks for v in eng.on_tick(tick)]
        silent_too_long = any(tick - t >= after_s * 1000 for tick in ticks)
        assert [v.event for v in started] == (["start"] if silent_too_long else [])
        t, seq = t + gap, seq + 1
        ended = eng.on_reading(reading(seq, t, 1.0))
        assert [v.event for v in ended] == (["end"] if silent_too_long else [])
        if silent_too_long:
            assert ended[0].violation_id == started[0].violation_id


# ---------------------------------------------------------------------------------------------------
# schedule

days = st.lists(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1, max_size=7, unique=True)
hhmm = st.integers(0, 24 * 60).map(lambda m: f"{m // 60:02d}:{m % 60:02d}")
timezones = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"])
instants = st.integers(1_600_000_000_000, 1_900_000_000_000)


def window(d, a, b) -> Window:
    return Window.model_validate({"days": d, "from": a, "to": b})


ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@given(hhmm, hhmm, timezones, instants)
def test_a_window_and_its_complement_cover_every_instant_once(a, b, tz, at_ms):
    if a == b:
        return
    a, b = sorted([a, b])
    day, night = window(ALL_DAYS, a, b), window(ALL_DAYS, b, a)  # night runs past midnight
    assert armed([day], tz, at_ms) != armed([night], tz, at_ms)
    assert armed([day, night], tz, at_ms)
    assert armed([], tz, at_ms)


@given(days, hhmm, hhmm, timezones, instants)
def test_a_window_past_midnight_is_its_evening_plus_the_next_days_morning(d, a, b, tz, at_ms):
    if not a > b:
        a, b = b, a
    if a == b:
        return
    following = [ALL_DAYS[(ALL_DAYS.index(x) + 1) % 7] for x in d]
    split = [window(d, a, "24:00"), window(following, "00:00", b)]
    assert armed([window(d, a, b)], tz, at_ms) == armed(split, tz, at_ms)
