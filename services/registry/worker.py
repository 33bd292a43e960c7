"""The registry worker: serves the registry's HTTP API (api.py) and, every ``drift_check_s``, compares
each model version's detections per frame and label with its baseline (monitoring.drift); a version
that drifts is logged as a warning and reported as a ``drift`` ModelEvent on the model-events topic
(which the sink writes to ClickHouse's ``model_events``). It also reads that topic, so its log tells
the operator what the detectors did with the models (loads, refusals, run failures, rollbacks).

A drift is reported when it starts and again every ``drift_window_s`` while it lasts; several registry
processes would each report it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import faust

from aimass import contracts
from aimass.contracts import ContractError, ModelEvent
from aimass.kafka import make_app, output_topic, raw_topic
from aimass.settings import RegistrySettings
from aimass_registry import api
from aimass_registry.service import Registry, Unavailable

log = logging.getLogger("aimass.registry")
SERVICE = "registry"
_TROUBLE = {"load_failed", "switch_refused", "run_failed", "rolled_back"}


class DriftAlerts:
    """Which drifting (version, label) pairs to report now: new ones, and ongoing ones once every
    ``repeat_s``; pairs that stopped drifting are forgotten (and returned as ended)."""

    def __init__(self, repeat_s: float):
        self.repeat_s = repeat_s
        self.last: dict[tuple[str, str], float] = {}

    def update(self, rows: list[tuple], now_s: float) -> tuple[list[tuple], list[tuple[str, str]]]:
        current = {(r[0], r[1]): r for r in rows}
        ended = [k for k in self.last if k not in current]
        for k in ended:
            del self.last[k]
        due = []
        for key, row in current.items():
            if key not in self.last or now_s - self.last[key] >= self.repeat_s:
                self.last[key] = now_s
                due.append(row)
        return due, ended


def _seconds(s: float) -> str:
    return f"{s / 3600:g} h" if s >= 3600 and s % 3600 == 0 else f"{s / 60:g} min" if s >= 60 else f"{s:g} s"


def drift_event(row: tuple, settings: RegistrySettings, worker: str) -> ModelEvent:
    model, label, _, base, _, recent, ratio = row
    detail = (f"{label}: {recent:.3f} detections per frame in the last {_seconds(settings.drift_window_s)} against "
              f"{base:.3f} in the {_seconds(settings.drift_baseline_s)} before (x{ratio:.2f}; drift is beyond "
              f"±{settings.drift_threshold:.0%})")
    return ModelEvent(at_ms=contracts.now_ms(), event="drift", model=model, service=SERVICE, worker=worker,
                      detail=detail, value=float(ratio))


def build_app(settings: RegistrySettings) -> faust.App:
    token = api.resolve_token(settings)  # no token: refuse to start (RegistryConfigError), before joining anything
    app = make_app(SERVICE, settings)
    events_topic = raw_topic(app, settings, contracts.TOPIC_MODEL_EVENTS)
    events_out = output_topic(app, settings, contracts.TOPIC_MODEL_EVENTS)
    registry = Registry(settings)
    listening = asyncio.Event()
    alerts = DriftAlerts(settings.drift_window_s)
    worker_id = f"{socket.gethostname()}:{os.getpid()}"

    @app.task
    async def serve_api() -> None:
        try:
            runner, url = await api.serve(registry, token, settings.registry_host, settings.registry_port)
        except OSError as exc:
            log.error("the registry API cannot listen on %s:%s (%s); set AIMASS_REGISTRY_HOST/PORT",
                      settings.registry_host, settings.registry_port, exc.strerror or exc)
            raise
        app.aimass_url = url
        listening.set()
        log.info("registry API listening on %s (model store %s)", url, registry.store.root)
        try:
            await asyncio.Event().wait()  # until the worker stops (the task is cancelled)
        finally:
            await runner.cleanup()

    @app.agent(events_topic)
    async def watch_events(stream) -> None:
        async for value in stream:
            try:
                ev = contracts.decode(value, ModelEvent)
            except ContractError as exc:
                log.warning("a model event that is not one: %s", exc)
                continue
            if ev.service != SERVICE and contracts.now_ms() - ev.at_ms < 600_000:  # not a new group's replay of old ones
                (log.warning if ev.event in _TROUBLE else log.info)(
                    "model %s: %s in %s %s%s", ev.model, ev.event, ev.service or "?", ev.worker,
                    f": {ev.detail}" if ev.detail else "")

    @app.timer(settings.drift_check_s)
    async def check_drift() -> None:
        try:
            _, rows = await registry.drift()
        except Unavailable as exc:
            log.warning("drift check skipped: %s", exc)
            return
        due, ended = alerts.update(rows, time.monotonic())
        for model, label in ended:
            log.info("model %s: the drift of %s is over", model, label)
        for row in due:
            event = drift_event(row, settings, worker_id)
            log.warning("model %s drifts: %s", event.model, event.detail)
            await events_out.send(event.model.encode(), contracts.encode(event))

    app.aimass_ready = listening.is_set
    app.aimass_registry = registry
    return app
