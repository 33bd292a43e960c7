"""`aimass models ...`: push, list, show, promote, canary, shadow, rollback, retire; compare, drift,
events. The same operations as the registry's HTTP API (service.Registry), run here against the model
store (AIMASS_MODEL_STORE), the models control topic (AIMASS_KAFKA_BOOTSTRAP) and ClickHouse
(AIMASS_CLICKHOUSE_URL).

Exit codes: 0 done, 2 refused (bad input, a version that does not exist, a routing change the routing
does not allow), 1 a server did not answer (an S3 model store's bucket included).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
from pathlib import Path
from typing import Optional

import typer

models_app = typer.Typer(help="Detection models: push, list, promote, canary, shadow, rollback, retire; monitoring.",
                         no_args_is_help=True)

REFUSED = 2


def _base():
    """aimass.cli's console and helpers (imported late: aimass.cli imports this module)."""
    from aimass import cli
    return cli


def _registry():
    from aimass.settings import RegistrySettings
    from aimass_registry.service import Registry
    return Registry(RegistrySettings())


def _run(fn):
    """Run ``fn()`` (a coroutine or a value) turning the registry's errors into one line each."""
    from aimass.routing import RoutingError
    from aimass_registry.service import Unavailable
    from aimass.model_store import StoreError
    from aimass_registry.validate import PushRefused
    base = _base()
    # The clients log every refused connection; the one line below says it once, with what to check.
    for name in ("aiokafka", "asyncio", "clickhouse_driver"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        result = fn()
        return asyncio.run(result) if asyncio.iscoroutine(result) else result
    except (PushRefused, StoreError, RoutingError, ValueError) as exc:
        base._fail(str(exc), 1 if getattr(exc, "reason", "") == "unavailable" else REFUSED)  # an S3 store's bucket
    except Unavailable as exc:
        base._fail(str(exc), 1)


def _print_routing(new) -> None:
    base = _base()
    base.console.print(f"routing revision {new.revision}: {new.reason}", highlight=False)
    rows = []
    for group, g in sorted(new.groups.items()):
        canary = f"{g.canary.model} ({g.canary.percent:g}% by {g.canary.by})" if g.canary else ""
        cams = ", ".join(sorted(c for c, grp in new.cameras.items() if grp == group)) or \
            ("every other camera" if group == "default" else "")
        rows.append((group, g.active, canary, g.shadow, cams))
    base.print_table(["group", "active", "canary", "shadow", "cameras"], rows)


# ---------------------------------------------------------------- push
@models_app.command("push")
def push(
    file: Path = typer.Argument(..., help="the ONNX file"),
    name: Optional[str] = typer.Option(None, "--name", help="model name (letters, digits, _ . -)"),
    version: Optional[str] = typer.Option(None, "--version", help="version (default: the next number for the name)"),
    format: Optional[str] = typer.Option(None, "--format", help="output format: nanodet, tf_ssd, yolov8, rtdetr"),
    spec: Optional[Path] = typer.Option(None, "--spec", help="a model.yaml with any of the keys (models/README.md); "
                                        "options given here override it"),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="the file's expected sha256 (refused if it differs)"),
    licence: Optional[str] = typer.Option(None, "--licence", help="the model's licence"),
    input_name: Optional[str] = typer.Option(None, "--input-name", help="graph input (default: the image input)"),
    input_size: Optional[str] = typer.Option(None, "--input-size", help="WIDTHxHEIGHT fed to the model "
                                             "(default: the graph's fixed size or Ultralytics' imgsz)"),
    layout: Optional[str] = typer.Option(None, "--layout", help="NCHW or NHWC"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 or uint8"),
    channels: Optional[str] = typer.Option(None, "--channels", help="RGB or BGR"),
    mean: Optional[str] = typer.Option(None, "--mean", help="per channel, e.g. 0,0,0"),
    std: Optional[str] = typer.Option(None, "--std", help="per channel, e.g. 255,255,255"),
    resize: Optional[str] = typer.Option(None, "--resize", help="stretch or letterbox"),
    classes: Optional[str] = typer.Option(None, "--classes", help="class names in index order, comma-separated "
                                          "(default: the ONNX metadata 'names')"),
    class_map: Optional[str] = typer.Option(None, "--class-map", help="model class=site label, comma-separated, e.g. "
                                            "car=vehicle,person=person (default: every class keeps its name)"),
    score_threshold: Optional[float] = typer.Option(None, "--score-threshold", min=0, max=1),
    nms_iou: Optional[float] = typer.Option(None, "--nms-iou", min=0, max=1),
    max_detections: Optional[int] = typer.Option(None, "--max-detections", min=1),
    set_: list[str] = typer.Option([], "--set", help="a format-specific model.yaml key as KEY=YAML, e.g. "
                                   "--set 'outputs={output: output0}' (repeatable)"),
) -> None:
    """Validate an ONNX model and store it as a new, staged version.

    Refused with the reason when it is not ONNX, too large, not the file its checksum says, or its
    outputs do not fit the format. Nothing serves it until it is promoted (or a canary or shadow)."""
    import yaml

    from aimass_registry.validate import PushOptions, parse_class_map, parse_floats, parse_size, read_spec_file
    base = _base()

    def options() -> PushOptions:
        extra = {}
        for item in set_:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--set {item!r} is not KEY=VALUE")
            try:
                extra[key.strip()] = yaml.safe_load(value)
            except yaml.YAMLError as exc:
                raise ValueError(f"--set {item!r}: the value is not YAML ({exc})") from None
        w, h = parse_size(input_size) if input_size else (None, None)
        return PushOptions(
            name=name, version=version, format=format, spec=read_spec_file(spec) if spec else None,
            spec_source=f"--spec {spec}" if spec else "", sha256=sha256, licence=licence, input_name=input_name,
            input_width=w, input_height=h, layout=layout.upper() if layout else None, dtype=dtype,
            channels=channels.upper() if channels else None, mean=parse_floats(mean, "--mean") if mean else None,
            std=parse_floats(std, "--std") if std else None, resize=resize,
            classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None,
            class_map=parse_class_map(class_map) if class_map else None, score_threshold=score_threshold,
            nms_iou=nms_iou, max_detections=max_detections, extra=extra)

    opts = _run(options)
    registry = _run(_registry)
    with base.console.status(f"checking {file} …") as status:
        rec = _run(lambda: registry.push(file, opts, display=str(file), pushed_by=f"cli:{getpass.getuser()}",
                                         progress=lambda msg: status.update(f"{file}: {msg} …")))
    base.console.print(f"pushed [bold]{rec.ref}[/bold]: {rec.format}, {rec.input_width}x{rec.input_height}, "
                       f"{rec.classes} classes, sha256 {rec.sha256[:12]}…, {rec.size_bytes / 1e6:.1f} MB. It is "
                       f"staged; serve it with `aimass models promote {rec.ref}` or try it with "
                       f"`aimass models canary {rec.ref} --percent 10`", highlight=False)


# ---------------------------------------------------------------- reading
@models_app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Every stored version and its status: active, canary, shadow (routed), staged or retired."""
    registry = _run(_registry)
    rows = _run(registry.list)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    _base().print_table(
        ["model", "status", "routes", "format", "input", "classes", "sha256", "created (UTC)"],
        [(r["ref"], r["status"], ", ".join(r["routes"]), r.get("format", ""),
          f"{r['input_width']}x{r['input_height']}" if r.get("input_width") else "", r.get("classes", ""),
          (r.get("sha256") or "")[:12], (r.get("created") or "")[:16].replace("T", " ")) for r in rows],
        title=f"models in {registry.store.root} (`aimass models show NAME:VERSION` for the rest)")


@models_app.command("show")
def show(ref: str = typer.Argument(..., help="NAME:VERSION")) -> None:
    """One version: its model.yaml, probe facts, status and routes (JSON)."""
    registry = _run(_registry)
    print(json.dumps(_run(lambda: registry.show(ref)), indent=2, default=str))


# ---------------------------------------------------------------- routing
Group = typer.Option("default", "--group", help="camera group (default: every camera not in another group)")


@models_app.command("promote")
def promote(ref: str = typer.Argument(..., help="NAME:VERSION"), group: str = Group,
            cameras: Optional[str] = typer.Option(None, "--cameras", help="camera ids (comma-separated) to put in "
                                                  "the group; a new group needs them"),
            reason: str = typer.Option("", "--reason")) -> None:
    """Make a version the group's active model (detectors switch between two batches)."""
    registry = _run(_registry)
    cams = [c.strip() for c in cameras.split(",") if c.strip()] if cameras else None
    _print_routing(_run(lambda: registry.promote(ref, group, cams, by="cli", reason=reason)))


@models_app.command("canary")
def canary(ref: str = typer.Argument(..., help="NAME:VERSION"),
           percent: float = typer.Option(..., "--percent", min=0, max=100, help="share of the group; 0 ends the canary"),
           by: str = typer.Option("camera", "--by", help="camera (a stable share of the cameras) or frame"),
           group: str = Group, reason: str = typer.Option("", "--reason")) -> None:
    """Send a share of a group's cameras (or frames) to a version beside the active one."""
    registry = _run(_registry)
    if by not in ("camera", "frame"):
        _base()._fail(f"--by {by!r}: choose camera or frame", REFUSED)
    _print_routing(_run(lambda: registry.canary(ref, percent, by, group, by="cli", reason=reason)))


@models_app.command("shadow")
def shadow(ref: str = typer.Argument(..., help="NAME:VERSION, or off"), group: str = Group,
           reason: str = typer.Option("", "--reason")) -> None:
    """Run a version beside the serving one on the group's frames (`off` ends it).

    Its results are recorded apart (ClickHouse shadow_results) and never acted on."""
    registry = _run(_registry)
    _print_routing(_run(lambda: registry.shadow(ref, group, by="cli", reason=reason)))


@models_app.command("rollback")
def rollback(group: str = Group, reason: str = typer.Option("", "--reason")) -> None:
    """End the group's canary, or else go back to the active model it had before its last promotion."""
    registry = _run(_registry)
    _print_routing(_run(lambda: registry.rollback(group, by="cli", reason=reason)))


@models_app.command("retire")
def retire(ref: str = typer.Argument(..., help="NAME:VERSION"), reason: str = typer.Option("", "--reason")) -> None:
    """Mark a version retired: kept in the store, never routed again. Refused while it is routed."""
    registry = _run(_registry)
    rec = _run(lambda: registry.retire(ref, reason))
    _base().console.print(f"retired {rec.ref}", highlight=False)


# ---------------------------------------------------------------- monitoring
@models_app.command("compare")
def compare(window: str = typer.Option("10m", "--window", help="how far back: 90s, 10m, 1h, ..."),
            site: Optional[str] = typer.Option(None, "--site", help="one site only")) -> None:
    """Each version serving in the window side by side: canary against active.

    Frames, objects per frame, inference p50/p95/p99 ms, mean batch, failures, and per label the
    detections per frame and median score."""
    from aimass_registry.monitoring import parse_duration
    registry = _run(_registry)
    seconds = _run(lambda: parse_duration(window))
    columns, rows = _run(lambda: registry.compare(seconds, site))
    _base().print_table(columns, rows, title=f"models over the last {window}")


@models_app.command("drift")
def drift(window: Optional[str] = typer.Option(None, "--window", help="recent window (default AIMASS_DRIFT_WINDOW_S)"),
          baseline: Optional[str] = typer.Option(None, "--baseline", help="baseline before it (default AIMASS_DRIFT_BASELINE_S)"),
          threshold: Optional[float] = typer.Option(None, "--threshold", help="relative change (default AIMASS_DRIFT_THRESHOLD)")) -> None:
    """Versions whose detections per frame of a label moved beyond the threshold from their baseline."""
    from aimass_registry.monitoring import parse_duration
    registry = _run(_registry)
    w = _run(lambda: parse_duration(window)) if window else None
    b = _run(lambda: parse_duration(baseline)) if baseline else None
    columns, rows = _run(lambda: registry.drift(w, b, threshold))
    _base().print_table(columns, rows, title="drifting versions")


@models_app.command("events")
def events(limit: int = typer.Option(50, "--limit", min=1), model: Optional[str] = typer.Option(None, "--model")) -> None:
    """The latest model events from the detectors and the registry (loads, switches, failures, drift)."""
    registry = _run(_registry)
    columns, rows = _run(lambda: registry.events(limit, model))
    _base().print_table(columns, rows, title="model events")
