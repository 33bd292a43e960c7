"""stopped and left_behind: a tracked object at rest in a zone.

Both rule types follow each tracked object (``track_id >= 0``) of ``classes`` and keep, per track, a
*rest*: the mean of the bottom centres seen since the object came to rest, and the event time it
did. A sighting within ``max_move`` (normalised image distance) of that mean continues the rest and
joins the mean; a sighting farther away means the object moved: the rest ends and a new one begins
there. So box jitter within ``max_move`` keeps an object at rest, one bad box at the start of a rest
does not end it (the mean soon outweighs it), and an object creeping on at speed ``v`` drifts
``max_move`` from the mean within about ``2 * max_move / v`` seconds, so a slow drive never builds a
long rest. Sightings anywhere in the frame count for motion (a car that drives off out of the zone
has moved at once); a rest counts for the rule only while its mean lies in ``zone``.

A track unseen for ``clear_s`` is gone; one seen again before that keeps its rest (a detector miss
or a short occlusion does not restart the clock). An open incident ends when its object moves off
(a sighting beyond ``max_move``) or is gone; after it ends, the same track starts no new incident
for ``cooldown_s``. While an incident lasts, an ``update`` event follows every ``update_s``.

* ``stopped``: the clock starts when the object comes to rest; ``seconds`` at rest in the zone start
  an incident (started_ms = when it came to rest). A vehicle stopping briefly, or driving through
  slowly, raises nothing.
* ``left_behind``: the clock counts *continuous unattended* time: it starts when the object is at
  rest and no object of ``owner_classes`` has its bottom centre within ``owner_distance`` of the
  object's, and restarts whenever one does. So an owner standing by their bag keeps it from firing,
  the clock starts when they walk away, and a passer-by before the limit restarts it (a deliberate
  choice: a detector miss of the owner standing by, which counting only the unattended frames would
  add up, cannot fire it). Once an incident is open, people coming near do not end it: it ends when
  the object is picked up (moves) or gone. started_ms = when it was last attended (or came to rest).

Event time throughout. Objects without a track id are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from aimass.contracts import DetectedObject, Detections, Violation
from aimass.site import LeftBehindRule, StoppedRule
from aimass_rules.evaluator import Incident, update_due, violation_id
from aimass_rules.geometry import point_in
from aimass_rules.objects import ZoneEvaluator, feet, standing, watched


@dataclass
class Rest:
    x: float  # mean bottom centre of the sightings since the object came to rest (normalised)
    y: float
    n: int  # sightings in that mean
    since_ms: float  # event time of the first sighting at rest here
    since_seq: int
    last_ms: float  # event time of the last sighting
    clock_ms: float  # when the rule's clock started (stopped: since_ms; left_behind: last attended)
    clock_seq: int
    label: str = ""
    incident: Incident | None = None


@dataclass
class RestState:
    rests: dict[int, Rest] = field(default_factory=dict)  # track id -> its current rest
    cooldown_until_ms: dict[int, float] = field(default_factory=dict)  # track id -> no new incident before


class AtRestEvaluator(ZoneEvaluator):
    """The shared logic: rests per track, the zone, the incident life cycle. Subclasses say when the
    clock restarts (``frame_context`` / ``restart_clock``) and word the messages."""

    state_type = RestState
    verb = "at rest"

    def frame_context(self, d: Detections) -> object:
        """What ``restart_clock`` needs from the whole frame (computed once a frame)."""
        return None

    def restart_clock(self, rest: Rest, ctx: object) -> bool:
        """Whether the rule's clock starts again at this sighting (the rest itself goes on)."""
        return False

    def describe_start(self, rest: Rest, tid: int, now: float) -> str:
        raise NotImplementedError

    def on_detections(self, d: Detections, st: RestState) -> list[Violation]:
        r, now = self.rule, d.captured_ms
        out: list[Violation] = []
        ctx = self.frame_context(d)
        for o, x, y in standing(d.objects, self.classes, r.min_score, tracked=True):
            tid = o.track_id
            rest = st.rests.get(tid)
            if rest is not None and math.hypot(x - rest.x, y - rest.y) > r.max_move:
                if rest.incident is not None:
                    out.append(self._end(st, tid, rest, d, now, f"{rest.label} (track {tid}) moved off after "
                                         f"{(now - rest.since_ms) / 1000:.1f} s at rest in zone '{self.zone_name}'"))
                rest = None
            if rest is None:
                rest = st.rests[tid] = Rest(x, y, 1, now, d.seq, now, now, d.seq, o.label)
            elif rest.last_ms < now:  # one sighting per track and frame
                rest.n += 1
                rest.x += (x - rest.x) / rest.n
                rest.y += (y - rest.y) / rest.n
                rest.last_ms = now
            if self.restart_clock(rest, ctx):
                rest.clock_ms, rest.clock_seq = now, d.seq
            if rest.incident is None:
                cooling = now < st.cooldown_until_ms.get(tid, float("-inf"))
                if (not cooling and now - rest.clock_ms >= r.seconds * 1000
                        and point_in(rest.x, rest.y, self.sides)):
                    rest.incident = Incident(
                        # Per track: two objects can come to rest in the same frame (ids have no '/').
                        violation_id=violation_id(self.site_id, r.id, r.camera, f"{r.zone}/{tid}", rest.clock_ms,
                                                  rest.clock_seq),
                        started_ms=rest.clock_ms, first_seq=rest.clock_seq, label=rest.label, track_id=tid,
                        peak=o.score, last_update_ms=now)  # updates follow every update_s after the start
                    out.append(self._event("start", rest.incident, d, now, o.score,
                                           self.describe_start(rest, tid, now)))
            else:
                inc = rest.incident
                inc.peak = max(inc.peak, o.score)
                if update_due(inc, now, r.update_s):
                    out.append(self._event("update", inc, d, now, o.score,
                                           f"{rest.label} (track {tid}) still {self.verb} in zone '{self.zone_name}' "
                                           f"after {(now - inc.started_ms) / 1000:.0f} s"))
        for tid, rest in list(st.rests.items()):
            if now - rest.last_ms > r.clear_s * 1000:
                if rest.incident is not None:
                    out.append(self._end(st, tid, rest, d, now, f"{rest.label} (track {tid}) gone from zone "
                                         f"'{self.zone_name}' (unseen for {r.clear_s:g} s)"))
                del st.rests[tid]
        for tid in [t for t, until in st.cooldown_until_ms.items() if until < now]:
            del st.cooldown_until_ms[tid]
        return out

    def _end(self, st: RestState, tid: int, rest: Rest, d: Detections, now: float, message: str) -> Violation:
        inc = rest.incident
        assert inc is not None
        rest.incident = None
        st.cooldown_until_ms[tid] = now + self.rule.cooldown_s * 1000
        return self._event("end", inc, d, now, inc.peak, message)

    def _event(self, event: str, inc: Incident, d: Detections, at_ms: float, score: float,
               message: str) -> Violation:
        return self._violation(event, inc, at_ms=at_ms, source_seq=d.seq, stamps=d.stamps, camera_id=self.rule.camera,
                               zone_id=self.rule.zone, score=score, message=message)

    def close(self, st: RestState, at_ms: float, reason: str) -> list[Violation]:
        out = []
        for tid, rest in st.rests.items():
            if rest.incident is not None:
                inc = rest.incident
                out.append(self._violation("end", inc, at_ms=max(at_ms, inc.started_ms), source_seq=-1, stamps={},
                                           camera_id=self.rule.camera, zone_id=self.rule.zone, score=inc.peak,
                                           message=f"track {tid}: incident closed: {reason}"))
        st.rests.clear()
        return out


class Stopped(AtRestEvaluator):
    """A vehicle stopped in a no-parking zone longer than ``seconds``."""

    rule_type = "stopped"
    rule: StoppedRule
    verb = "stopped"

    def describe_start(self, rest: Rest, tid: int, now: float) -> str:
        return (f"{rest.label} (track {tid}) stopped in zone '{self.zone_name}' for "
                f"{(now - rest.since_ms) / 1000:.1f} s (limit {self.rule.seconds:g} s)")


class LeftBehind(AtRestEvaluator):
    """An object left behind: at rest in the zone, with no owner near it, for ``seconds``."""

    rule_type = "left_behind"
    rule: LeftBehindRule
    verb = "left behind"

    def __init__(self, rule: LeftBehindRule, site):
        super().__init__(rule, site)
        self.owner_classes = frozenset(rule.owner_classes)

    def frame_context(self, d: Detections) -> list[tuple[float, float]]:
        owners: list[DetectedObject] = watched(d.objects, self.owner_classes, self.rule.min_score)
        return feet(owners)

    def restart_clock(self, rest: Rest, owners: list[tuple[float, float]]) -> bool:
        limit = self.rule.owner_distance ** 2
        return any((x - rest.x) ** 2 + (y - rest.y) ** 2 <= limit for x, y in owners)

    def describe_start(self, rest: Rest, tid: int, now: float) -> str:
        return (f"{rest.label} (track {tid}) left behind in zone '{self.zone_name}': at rest for "
                f"{(now - rest.since_ms) / 1000:.1f} s, nobody ({'/'.join(sorted(self.owner_classes))}) within "
                f"{self.rule.owner_distance:g} of it for {(now - rest.clock_ms) / 1000:.1f} s "
                f"(limit {self.rule.seconds:g} s)")
