"""The registry's operations, shared by `aimass models ...` and the HTTP API: push (validate.py, then
the store), list, show, retire, and the routing changes (promote, canary, shadow, rollback).

A routing change reads the current ``ModelRouting`` from the compacted models control topic, computes
the next revision with aimass.routing (pure), refuses models that are not in the store or are retired,
and publishes the revision; detector workers follow the topic and switch between two batches. One
registry process makes one change at a time; two registries (or a CLI beside an API) changing the
routing in the same second can overwrite each other's revision (the control topic has no
compare-and-set): the later one wins, and ``list`` shows what is in force.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from aiokafka.errors import KafkaError

from aimass import contracts, control
from aimass import routing as R
from aimass.contracts import ContractError, ModelRouting
from aimass.routing import RoutingError
from aimass.settings import RegistrySettings
from aimass_registry import monitoring
from aimass.model_store import ModelStore, StoreError, VersionRecord, check_name, parse_ref
from aimass_registry.validate import (GraphFacts, Progress, PushOptions, PushRefused, build_spec, check_checksum,
                                      inspect_graph, probe_folder, refuse_non_onnx, stage_copy, write_spec)

log = logging.getLogger("aimass.registry")


class Unavailable(RuntimeError):
    """Kafka or ClickHouse did not answer; the message says which and what to check."""


class RoutingChannel(Protocol):
    async def latest(self) -> ModelRouting | None: ...

    async def publish(self, routing: ModelRouting) -> None: ...


class KafkaRouting:
    """The routing document on the compacted models control topic (key "routing")."""

    def __init__(self, settings: RegistrySettings, timeout_s: float = 10.0):
        self.settings = settings
        self.timeout_s = timeout_s

    def _unavailable(self, exc: BaseException) -> Unavailable:
        detail = f" ({exc})" if str(exc) else ""
        return Unavailable(f"no answer from Kafka at {self.settings.kafka_bootstrap} within {self.timeout_s:.0f} s"
                           f"{detail}. Is the broker up and AIMASS_KAFKA_BOOTSTRAP right (`aimass stack status`)?")

    async def latest(self) -> ModelRouting | None:
        try:
            value = await control.latest(self.settings, contracts.TOPIC_CONTROL_MODELS, self.timeout_s)
        except (asyncio.TimeoutError, KafkaError, OSError) as exc:
            raise self._unavailable(exc) from None
        if value is None:
            return None
        try:
            return contracts.decode(value, ModelRouting)
        except ContractError as exc:
            raise Unavailable(f"the models control topic's last document is not a routing revision ({exc}); "
                              "fix the topic before changing the routing") from None

    async def publish(self, routing: ModelRouting) -> None:
        try:
            await asyncio.wait_for(control.publish(self.settings, contracts.TOPIC_CONTROL_MODELS, b"routing",
                                                   contracts.encode(routing)), self.timeout_s)
        except (asyncio.TimeoutError, KafkaError, OSError) as exc:
            raise self._unavailable(exc) from None


class MemoryRouting:
    """A routing channel in memory (tests, and trying the registry without Kafka)."""

    def __init__(self, routing: ModelRouting | None = None):
        self.revisions: list[ModelRouting] = [routing] if routing else []

    async def latest(self) -> ModelRouting | None:
        return self.revisions[-1] if self.revisions else None

    async def publish(self, routing: ModelRouting) -> None:
        self.revisions.append(routing)


def status_of(routing: ModelRouting | None, ref: str, retired: bool) -> tuple[str, list[str]]:
    """("active" | "canary" | "shadow" | "retired" | "staged", where it is routed: ["default:active", ...])."""
    roles = R.role_of(routing, ref) if routing else []
    where = []
    for group, role in roles:
        text = f"{group}:{role}"
        c = routing.groups[group].canary
        if role == "canary" and c is not None:
            text += f" {c.percent:g}% by {c.by}"
        where.append(text)
    kinds = {role for _, role in roles}
    for kind in ("active", "canary", "shadow"):
        if kind in kinds:
            return kind, where
    return ("retired" if retired else "staged"), where


def builtin_ref() -> str | None:
    """The model detectors serve while no routing exists: their model_dir (AIMASS_MODEL_DIR, by default
    models/nanodet-g-416). None when that folder cannot be read here."""
    from aimass.settings import DetectorSettings
    from aimass_detector.model import ModelError, load_spec
    try:
        spec = load_spec(DetectorSettings().model_dir)
    except (ModelError, ValueError, OSError):
        return None
    return R.ref(spec.name, spec.version)


_UNSET = object()


class Registry:
    """``builtin``: the ref of the detectors' model_dir (default: read from AIMASS_MODEL_DIR), which
    serves every camera before the first routing revision. The first change starts from it, so a
    first canary runs beside it and a first promote can be rolled back to it; it may be routed without
    being in the store (the detectors load it from model_dir)."""

    def __init__(self, settings: RegistrySettings, store: ModelStore | None = None,
                 routing: RoutingChannel | None = None, builtin: str | None = _UNSET):  # type: ignore[assignment]
        self.settings = settings
        self.store = store or ModelStore.from_settings(settings)
        self.channel = routing or KafkaRouting(settings)
        self.builtin = builtin_ref() if builtin is _UNSET else builtin
        self.max_bytes = int(settings.max_model_mb * 1024 * 1024)
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------ push
    def push(self, source: Path | BinaryIO, opts: PushOptions, *, display: str | None = None, pushed_by: str = "",
             source_name: str = "", progress: Progress | None = None) -> VersionRecord:
        """Validate ``source`` (a file path or a binary stream) with ``opts`` and store it as a new
        version. Blocking (ONNX Runtime runs the probe): the HTTP API calls it in a thread. Raises
        PushRefused; a refused push leaves nothing in the store."""
        step = progress or (lambda _msg: None)
        display = display or str(source)
        spec_in = opts.spec or {}
        name = opts.name or spec_in.get("name")
        if not name:
            raise PushRefused("bad_spec", f"{display}: no model name; give --name (or 'name' in --spec)")
        try:
            name = check_name("name", str(name))
            version = opts.version or spec_in.get("version")
            version = check_name("version", str(version)) if version not in (None, "") else self.store.next_version(name)
        except StoreError as exc:
            raise PushRefused("bad_name", f"{display}: {exc}") from None
        if self.store.has(f"{name}:{version}"):
            raise PushRefused("exists", f"{display}: model {name}:{version} is already in the store; versions are never "
                              "overwritten. Push it as a new version (--version, or leave it out for the next number)")
        opts = PushOptions(**{**opts.__dict__, "name": name, "version": version})
        staging = self.store.staging()
        try:
            onnx = staging / "model.onnx"
            step(f"copying {display} (at most {self.settings.max_model_mb:g} MB) and checking it is ONNX")
            sha, size = stage_copy(source, onnx, self.max_bytes, display)
            refuse_non_onnx(onnx, display)
            check_checksum(display, sha, opts.sha256, "--sha256")
            check_checksum(display, sha, spec_in.get("sha256"), f"the sha256 in {opts.spec_source or '--spec'}")
            step("loading it in ONNX Runtime")
            facts: GraphFacts = inspect_graph(onnx, display)
            spec = build_spec(opts, facts, display)
            write_spec(staging, spec, sha)
            step(f"probe: a synthetic batch through the '{spec['format']}' adapter")
            probe = probe_folder(staging, display)
            step("storing")
            meta: dict[str, Any] = {
                "source": source_name or (Path(source).name if isinstance(source, (str, Path)) else display),
                "pushed_by": pushed_by,
                "licence": str(spec.get("licence") or ""), "format": spec["format"],
                "graph": {"inputs": facts.inputs, "outputs": facts.outputs},
                "probe": {k: probe.get(k) for k in ("providers", "batch", "inputs", "outputs", "seconds_first_run",
                                                    "seconds_per_run", "seconds_per_frame", "detections", "metadata")},
            }
            try:
                record = self.store.add(onnx, spec, meta, move=True)
            except StoreError as exc:
                raise PushRefused(exc.reason, str(exc)) from None
        finally:
            self.store.discard(staging)
        log.info("pushed %s (%s, sha256 %s, %d bytes) by %s", record.ref, record.format, record.sha256[:12], size,
                 pushed_by or "?")
        return record

    # ------------------------------------------------------------ reading
    async def routing(self) -> ModelRouting | None:
        return await self.channel.latest()

    async def list(self) -> list[dict[str, Any]]:
        """Every stored version with its status, and any routed model missing from the store."""
        routing = await self.routing()
        rows = []
        for rec in self.store.versions():
            status, where = status_of(routing, rec.ref, rec.retired)
            rows.append({**rec.as_dict(), "status": status, "routes": where})
        stored = {r["ref"] for r in rows}
        for ref in sorted(R.models_in_use(routing) - stored) if routing else []:
            status, where = status_of(routing, ref, False)
            name, _, version = ref.rpartition(":")
            where_from = "the detectors' model_dir" if ref == self.builtin else "not in the store"
            rows.append({"ref": ref, "name": name, "version": version, "status": f"{status} ({where_from})",
                         "routes": where, "format": "", "retired": False})
        return rows

    async def show(self, model_ref: str) -> dict[str, Any]:
        rec = self.store.get(model_ref)
        routing = await self.routing()
        status, where = status_of(routing, rec.ref, rec.retired)
        return {**rec.as_dict(), "status": status, "routes": where, "folder": str(self.store.folder(rec.ref)),
                "spec": self.store.spec(rec.ref), "meta": self.store.meta(rec.ref)}

    # ------------------------------------------------------------ routing changes
    def _servable(self, ref: str) -> None:
        parse_ref(ref)
        if ref == self.builtin and not self.store.has(ref):
            return  # the detectors' own model_dir serves it
        if not self.store.has(ref):
            known = ", ".join(r.ref for r in self.store.versions() if not r.retired) or "none"
            raise StoreError("unknown", f"{ref} is not in the model store {self.store.root} (servable versions: "
                             f"{known}); push it first with `aimass models push`")
        rec = self.store.get(ref)
        if rec.retired:
            raise RoutingError(f"{ref} is retired{f' ({rec.retired_reason})' if rec.retired_reason else ''}; "
                               "retired versions are not routed again: push it as a new version to serve it")

    async def _change(self, make: Callable[[ModelRouting | None], ModelRouting]) -> ModelRouting:
        async with self._lock:
            current = await self.channel.latest()
            new = make(current)
            before = R.models_in_use(current) if current else set()
            for ref in sorted(R.models_in_use(new) - before):
                self._servable(ref)  # a rollback to a version retired meanwhile is refused too
            await self.channel.publish(new)
        log.info("routing revision %d by %s: %s", new.revision, new.by, new.reason)
        return new

    def _need(self, current: ModelRouting | None, what: str) -> ModelRouting:
        """The routing to change: the current one, or before the first revision, the detectors'
        model_dir serving every camera (as revision 0, so the first published one is revision 1)."""
        if current is not None:
            return current
        if self.builtin:
            start = R.initial(self.builtin, reason="the detectors' model_dir, before any routing")
            start.revision = 0
            return start
        raise RoutingError(f"no model is routed yet, so there is nothing to {what}; promote one first "
                           "(`aimass models promote NAME:VERSION`): it serves every camera")

    async def promote(self, model_ref: str, group: str = R.DEFAULT_GROUP, cameras: list[str] | None = None,
                      by: str = "", reason: str = "") -> ModelRouting:
        self._servable(model_ref)

        def make(cur):
            if cur is None and not self.builtin:
                if group != R.DEFAULT_GROUP or cameras:
                    raise RoutingError(f"no model is routed yet: promote one for every camera first (without --group "
                                       f"or --cameras), then {model_ref} for group {group}")
                return R.initial(model_ref, by=by, reason=reason or f"promote {model_ref}")
            return R.promote(self._need(cur, "promote"), model_ref, group, cameras, by=by, reason=reason)
        return await self._change(make)

    async def canary(self, model_ref: str, percent: float, by_key: str = "camera", group: str = R.DEFAULT_GROUP,
                     by: str = "", reason: str = "") -> ModelRouting:
        if percent > 0:
            self._servable(model_ref)

        def make(cur):
            cur = self._need(cur, "canary beside")
            g = cur.groups.get(group)
            if percent == 0 and g is not None and (g.canary is None or g.canary.model != model_ref):
                raise RoutingError(f"{model_ref} is not the canary of group {group} (it has "
                                   f"{g.canary.model if g.canary else 'none'}); nothing to end")
            return R.set_canary(cur, model_ref, percent, group, by_key, by=by, reason=reason)
        return await self._change(make)

    async def shadow(self, model_ref: str, group: str = R.DEFAULT_GROUP, by: str = "", reason: str = "") -> ModelRouting:
        """``model_ref`` "" or "off" ends the group's shadow."""
        model_ref = "" if model_ref in ("", "off", "none") else model_ref
        if model_ref:
            self._servable(model_ref)
        return await self._change(lambda cur: R.set_shadow(self._need(cur, "shadow"), model_ref, group, by=by,
                                                           reason=reason))

    async def rollback(self, group: str = R.DEFAULT_GROUP, by: str = "", reason: str = "") -> ModelRouting:
        return await self._change(lambda cur: R.rollback(self._need(cur, "roll back"), group, by=by, reason=reason))

    async def retire(self, model_ref: str, reason: str = "") -> VersionRecord:
        """Mark a version retired; refused while it is routed anywhere (active, canary or shadow)."""
        self.store.folder(model_ref)
        async with self._lock:
            routing = await self.channel.latest()
            status, where = status_of(routing, model_ref, False)
            if where:
                raise RoutingError(f"{model_ref} is still routed ({', '.join(where)}); promote another version, end "
                                   "its canary (canary --percent 0) or its shadow (shadow off) first, then retire it")
            rec = self.store.retire(model_ref, reason)
        log.info("retired %s: %s", model_ref, reason or "no reason given")
        return rec

    # ------------------------------------------------------------ monitoring (ClickHouse)
    def _clickhouse(self, fn: Callable, *args, **kw):
        from clickhouse_driver.errors import Error as ClickHouseError

        from aimass.clickhouse.client import connect, parse_url
        try:
            client = connect(self.settings.clickhouse_url)
        except ValueError as exc:
            raise Unavailable(str(exc)) from None
        try:
            return fn(client, *args, **kw)
        except (ClickHouseError, OSError, EOFError) as exc:
            message = getattr(exc, "message", str(exc)).split("Stack trace:")[0].strip()
            raise Unavailable(f"ClickHouse at {parse_url(self.settings.clickhouse_url)!r}: {message}. Is it up and "
                              "AIMASS_CLICKHOUSE_URL right?") from None
        finally:
            client.disconnect()

    async def compare(self, window_s: float, site_id: str | None = None) -> tuple[list[str], list[tuple]]:
        """monitoring.compare, with each version's role in the current routing (when Kafka answers)."""
        columns, rows = await asyncio.to_thread(self._clickhouse, monitoring.compare, window_s, site_id)
        try:
            routing = await self.routing()
        except Unavailable:
            routing = None
        i = columns.index("model")
        out = [(r[i], ", ".join(status_of(routing, r[i], False)[1]) or "-", *r[i + 1:]) for r in rows]
        return ["model", "routed", *columns[i + 1:]], out

    async def drift(self, window_s: float | None = None, baseline_s: float | None = None,
                    threshold: float | None = None) -> tuple[list[str], list[tuple]]:
        s = self.settings
        return await asyncio.to_thread(self._clickhouse, monitoring.drift, window_s or s.drift_window_s,
                                       baseline_s or s.drift_baseline_s, threshold or s.drift_threshold)

    async def events(self, limit: int = 50, model: str | None = None) -> tuple[list[str], list[tuple]]:
        return await asyncio.to_thread(self._clickhouse, monitoring.events, limit, model)
