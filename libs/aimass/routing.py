"""Which model version serves which frame: the routing document's pure logic.

One ``ModelRouting`` document (aimass.contracts) says, per camera group, the active model, an optional
canary (a percentage of the group's cameras or frames) and an optional shadow. The registry changes it
(promote, canary, shadow, rollback) and publishes each revision on the compacted models control topic;
detector workers follow that topic and ask ``route`` for every frame. Everything here is a plain function
of the document, so the CLI, the HTTP API and the detector agree, and a replay gives the same routes.

Model references are "name:version" strings (``ref``/``split_ref``).

Rollback (as KServe's: back to the last fully-served revision): a group with a canary drops the canary;
a group without one goes back to the active it had before its last promotion (``history``).
"""

from __future__ import annotations

import zlib

from aimass.contracts import Canary, GroupRoute, ModelRouting, now_ms

DEFAULT_GROUP = "default"
HISTORY_LIMIT = 50


class RoutingError(ValueError):
    """A routing change that cannot be made; the message says why and what to do."""


def ref(name: str, version: str) -> str:
    return f"{name}:{version}"


def split_ref(model: str) -> tuple[str, str]:
    name, sep, version = model.rpartition(":")
    if not sep or not name or not version:
        raise RoutingError(f"{model!r} is not a model reference; write NAME:VERSION, e.g. nanodet-g-416:1")
    return name, version


def initial(active: str, by: str = "", reason: str = "first model") -> ModelRouting:
    """Revision 1: ``active`` serves every camera."""
    split_ref(active)
    return ModelRouting(revision=1, updated_ms=now_ms(), by=by, reason=reason,
                        groups={DEFAULT_GROUP: GroupRoute(active=active)})


def bucket(key: str) -> float:
    """A stable position in [0, 100) for a key (the same in every process and release: CRC-32)."""
    return (zlib.crc32(key.encode()) % 10_000) / 100.0


def group_of(routing: ModelRouting, camera_id: str) -> str:
    group = routing.cameras.get(camera_id, DEFAULT_GROUP)
    return group if group in routing.groups else DEFAULT_GROUP


def route(routing: ModelRouting, camera_id: str, seq: int) -> tuple[str, str]:
    """(the model ref that serves this frame, the shadow model ref or "")."""
    g = routing.groups[group_of(routing, camera_id)]
    model = g.active
    c = g.canary
    if c is not None and c.percent > 0:
        key = camera_id if c.by == "camera" else f"{camera_id}#{seq}"
        if bucket(key) < c.percent:
            model = c.model
    return model, (g.shadow if g.shadow and g.shadow != model else "")


def models_in_use(routing: ModelRouting) -> set[str]:
    """Every ref a detector must have loaded to serve this revision (actives, canaries, shadows)."""
    out: set[str] = set()
    for g in routing.groups.values():
        out.add(g.active)
        if g.canary is not None:
            out.add(g.canary.model)
        if g.shadow:
            out.add(g.shadow)
    return out


def role_of(routing: ModelRouting, model: str) -> list[tuple[str, str]]:
    """[(group, "active" | "canary" | "shadow")] where ``model`` is routed."""
    roles = []
    for name, g in sorted(routing.groups.items()):
        if g.active == model:
            roles.append((name, "active"))
        if g.canary is not None and g.canary.model == model:
            roles.append((name, "canary"))
        if g.shadow == model:
            roles.append((name, "shadow"))
    return roles


# -- changes: each returns a new revision and leaves the given one as it was ---------------------

def _next(routing: ModelRouting, by: str, reason: str, groups: dict[str, GroupRoute],
          cameras: dict[str, str] | None = None, history: list[dict[str, str]] | None = None) -> ModelRouting:
    return ModelRouting(revision=routing.revision + 1, updated_ms=now_ms(), by=by, reason=reason, groups=groups,
                        cameras=dict(routing.cameras if cameras is None else cameras),
                        history=list(routing.history if history is None else history)[-HISTORY_LIMIT:])


def _copy(g: GroupRoute, **changes) -> GroupRoute:
    fields = {"active": g.active, "canary": g.canary, "shadow": g.shadow}
    fields.update(changes)
    return GroupRoute(**fields)


def _group(routing: ModelRouting, group: str) -> GroupRoute:
    if group not in routing.groups:
        raise RoutingError(f"no camera group {group!r}; groups: {', '.join(sorted(routing.groups))}. Create it with "
                           f"`aimass models promote MODEL --group {group} --cameras CAM,...`")
    return routing.groups[group]


def promote(routing: ModelRouting, model: str, group: str = DEFAULT_GROUP, cameras: list[str] | None = None,
            by: str = "", reason: str = "") -> ModelRouting:
    """``model`` becomes the group's active model (a canary of it, if any, ends: it serves everything
    now). ``cameras`` (re)assigns cameras to the group; a new group needs them."""
    split_ref(model)
    groups = dict(routing.groups)
    new_cameras = dict(routing.cameras)
    if group not in groups:
        if not cameras:
            raise RoutingError(f"camera group {group!r} does not exist yet; name its cameras with --cameras")
        groups[group] = GroupRoute(active=model)
        previous = None
    else:
        previous = groups[group].active
        canary = groups[group].canary
        groups[group] = _copy(groups[group], active=model, canary=None if canary is None or canary.model == model
                              else canary)
    for cam in cameras or []:
        new_cameras[cam] = group
    history = list(routing.history)
    if previous is not None and previous != model:
        history.append({group: previous})
    return _next(routing, by, reason or f"promote {model} in {group}", groups, new_cameras, history)


def set_canary(routing: ModelRouting, model: str, percent: float, group: str = DEFAULT_GROUP, by_key: str = "camera",
               by: str = "", reason: str = "") -> ModelRouting:
    """``percent`` of the group's cameras (or frames) go to ``model``; 0 ends the canary."""
    split_ref(model)
    if not 0.0 <= percent <= 100.0:
        raise RoutingError(f"canary percent {percent} is not in 0..100")
    if by_key not in ("camera", "frame"):
        raise RoutingError(f"canary by {by_key!r}: choose camera (a share of the cameras) or frame (of the frames)")
    g = _group(routing, group)
    if model == g.active:
        raise RoutingError(f"{model} is already the active model of {group}; a canary needs another version")
    groups = dict(routing.groups)
    groups[group] = _copy(g, canary=None if percent == 0 else Canary(model=model, percent=percent, by=by_key))
    return _next(routing, by, reason or f"canary {model} at {percent:g}% of {group}'s {by_key}s", groups)


def set_shadow(routing: ModelRouting, model: str, group: str = DEFAULT_GROUP, by: str = "",
               reason: str = "") -> ModelRouting:
    """``model`` runs on the group's frames beside the serving model; "" ends shadowing."""
    if model:
        split_ref(model)
    g = _group(routing, group)
    groups = dict(routing.groups)
    groups[group] = _copy(g, shadow=model)
    return _next(routing, by, reason or (f"shadow {model} in {group}" if model else f"no shadow in {group}"), groups)


def rollback(routing: ModelRouting, group: str = DEFAULT_GROUP, by: str = "", reason: str = "") -> ModelRouting:
    """Back to the last fully-served revision of the group: drop its canary, or else restore the
    active model it had before its last promotion."""
    g = _group(routing, group)
    if g.canary is not None:
        groups = dict(routing.groups)
        groups[group] = _copy(g, canary=None)
        return _next(routing, by, reason or f"rollback: canary {g.canary.model} ended in {group}", groups)
    return _restore_previous(routing, group, by, reason)


def _restore_previous(routing: ModelRouting, group: str, by: str, reason: str) -> ModelRouting:
    g = _group(routing, group)
    history = list(routing.history)
    for i in range(len(history) - 1, -1, -1):
        if group in history[i]:
            previous = history[i][group]
            del history[i]
            groups = dict(routing.groups)
            canary = g.canary if g.canary is not None and g.canary.model != previous else None
            groups[group] = _copy(g, active=previous, canary=canary)
            return _next(routing, by, reason or f"rollback: {group} back to {previous} from {g.active}", groups,
                         history=history)
    raise RoutingError(f"group {group!r} has no earlier active model to roll back to (and no canary); promote "
                       "another version instead")


def withdraw(routing: ModelRouting, model: str, by: str = "", reason: str = "") -> ModelRouting:
    """Stop routing anything to ``model`` (it failed at run time): canaries and shadows of it end, and
    groups it is active in roll back. Raises RoutingError when a group has nothing to go back to."""
    current = routing
    for group, role in role_of(routing, model):
        g = current.groups[group]
        if role == "canary":
            current = set_canary(current, model, 0, group, by=by, reason=reason)
        elif role == "shadow":
            current = set_shadow(current, "", group, by=by, reason=reason)
        elif g.active == model:
            current = _restore_previous(current, group, by, reason)
    if current is routing:
        return routing
    return ModelRouting(revision=routing.revision + 1, updated_ms=now_ms(), by=by, reason=reason,
                        groups=current.groups, cameras=current.cameras, history=current.history)
