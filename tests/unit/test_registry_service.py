"""The registry's operations (aimass_registry.service.Registry) on a routing kept in memory: statuses,
routing changes and what they refuse, retiring; the `aimass models` CLI over them; the API's token."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aimass.cli import app
from aimass.routing import RoutingError
from aimass.settings import RegistrySettings
from aimass_registry import cli as registry_cli
from aimass_registry.api import RegistryConfigError, resolve_token
from aimass_registry.service import MemoryRouting, Registry
from aimass.model_store import StoreError

PEDSSD = Path(__file__).resolve().parents[2] / "models" / "pedssd"


def _add(registry: Registry, name: str, version: str) -> None:
    spec = yaml.safe_load((PEDSSD / "model.yaml").read_text())
    spec.update(name=name, version=version)
    registry.store.add(PEDSSD / "model.onnx", spec, {})


@pytest.fixture
def registry(tmp_path) -> Registry:
    r = Registry(RegistrySettings(model_store=tmp_path / "store"), routing=MemoryRouting(), builtin=None)
    for v in ("1", "2", "3"):
        _add(r, "ped", v)
    return r


def run(coro):
    return asyncio.run(coro)


def _statuses(registry) -> dict[str, str]:
    return {m["ref"]: m["status"] for m in run(registry.list())}


def test_statuses_follow_the_routing(registry):
    assert _statuses(registry) == {"ped:1": "staged", "ped:2": "staged", "ped:3": "staged"}
    r1 = run(registry.promote("ped:1", by="test"))
    assert r1.revision == 1 and r1.groups["default"].active == "ped:1"  # the first promote creates the routing
    r2 = run(registry.canary("ped:2", 25, "frame"))
    r3 = run(registry.shadow("ped:3"))
    assert (r2.revision, r3.revision) == (2, 3)
    models = {m["ref"]: m for m in run(registry.list())}
    assert {k: m["status"] for k, m in models.items()} == {"ped:1": "active", "ped:2": "canary", "ped:3": "shadow"}
    assert models["ped:2"]["routes"] == ["default:canary 25% by frame"]
    shown = run(registry.show("ped:2"))
    assert shown["status"] == "canary" and shown["spec"]["format"] == "tf_ssd" and shown["folder"].endswith("ped/2")


def test_before_any_routing_changes_start_from_the_detectors_model_dir(registry):
    registry.builtin = "nanodet-g-416:1"  # what Registry reads from AIMASS_MODEL_DIR by default
    r = run(registry.canary("ped:2", 10))
    assert r.revision == 1 and r.groups["default"].active == "nanodet-g-416:1" and r.groups["default"].canary.model == "ped:2"
    assert _statuses(registry)["nanodet-g-416:1"] == "active (the detectors' model_dir)"
    r = run(registry.promote("ped:1"))
    assert r.revision == 2 and r.history == [{"default": "nanodet-g-416:1"}]
    assert r.groups["default"].canary.model == "ped:2"  # a canary of another version carries on
    assert run(registry.rollback()).groups["default"].canary is None
    r = run(registry.rollback())  # back to the model_dir's model, which is not in the store
    assert r.groups["default"].active == "nanodet-g-416:1" and r.revision == 4


def test_rollback_ends_the_canary_then_restores_the_previous_active(registry):
    run(registry.promote("ped:1"))
    run(registry.promote("ped:2"))
    run(registry.canary("ped:3", 10))
    r = run(registry.rollback())
    assert r.groups["default"].canary is None and r.groups["default"].active == "ped:2"
    r = run(registry.rollback())
    assert r.groups["default"].active == "ped:1" and r.revision == 5
    with pytest.raises(RoutingError, match="no earlier active"):
        run(registry.rollback())


def test_routing_refuses_unknown_and_retired_versions(registry):
    with pytest.raises(StoreError, match="nope:1 is not in the model store") as exc:
        run(registry.promote("nope:1"))
    assert exc.value.reason == "unknown"
    with pytest.raises(RoutingError, match="no model is routed yet"):
        run(registry.canary("ped:2", 10))
    with pytest.raises(RoutingError, match="no model is routed yet"):
        run(registry.promote("ped:2", group="gate", cameras=["cam-1"]))
    run(registry.promote("ped:1"))
    run(registry.retire("ped:3", "bad on night scenes"))
    with pytest.raises(RoutingError, match="ped:3 is retired \\(bad on night scenes\\)"):
        run(registry.canary("ped:3", 10))
    assert _statuses(registry)["ped:3"] == "retired"
    assert len(registry.channel.revisions) == 1  # nothing refused was published


def test_retire_is_refused_while_routed_anywhere(registry):
    run(registry.promote("ped:1"))
    run(registry.promote("ped:2", group="gate", cameras=["cam-gate"]))
    run(registry.shadow("ped:3", group="gate"))
    for ref, where in (("ped:1", "default:active"), ("ped:2", "gate:active"), ("ped:3", "gate:shadow")):
        with pytest.raises(RoutingError, match=f"{ref} is still routed \\({where}\\)"):
            run(registry.retire(ref))
        assert not registry.store.get(ref).retired
    run(registry.shadow("off", group="gate"))
    assert run(registry.retire("ped:3", "unused")).retired


def test_rollback_to_a_version_retired_meanwhile_is_refused(registry):
    run(registry.promote("ped:1"))
    run(registry.promote("ped:2"))
    run(registry.retire("ped:1", "withdrawn"))
    with pytest.raises(RoutingError, match="ped:1 is retired"):
        run(registry.rollback())
    assert registry.channel.revisions[-1].groups["default"].active == "ped:2"


def test_list_shows_routed_models_missing_from_the_store(registry):
    run(registry.promote("ped:1"))
    routing = registry.channel.revisions[-1]
    routing.groups["default"].active = "gone:1"  # e.g. a store that was wiped
    assert _statuses(registry)["gone:1"] == "active (not in the store)"


def test_token_is_required_and_never_echoed(tmp_path):
    with pytest.raises(RegistryConfigError, match="AIMASS_REGISTRY_TOKEN"):
        resolve_token(RegistrySettings(registry_token=""))
    with pytest.raises(RegistryConfigError, match="shorter than 16") as exc:
        resolve_token(RegistrySettings(registry_token="hunter2"))
    assert "hunter2" not in str(exc.value)
    f = tmp_path / "token"
    f.write_text("s3cr3t-s3cr3t-s3cr3t-s3cr3t\n")
    assert resolve_token(RegistrySettings(registry_token_file=f)) == "s3cr3t-s3cr3t-s3cr3t-s3cr3t"
    assert "s3cr3t" not in repr(RegistrySettings(registry_token="s3cr3t-s3cr3t-s3cr3t-s3cr3t"))


# ---------------------------------------------------------------- the CLI
@pytest.fixture
def cli(registry, monkeypatch):
    monkeypatch.setattr(registry_cli, "_registry", lambda: registry)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["models", *args])


def test_cli_push_list_promote_canary_rollback(cli, registry):
    r = cli("push", str(PEDSSD / "model.onnx"), "--spec", str(PEDSSD / "model.yaml"))
    assert r.exit_code == 0, r.output
    assert "pushed pedssd:1" in r.output and "staged" in r.output
    r = cli("promote", "pedssd:1")
    assert r.exit_code == 0 and "routing revision 1" in r.output and "pedssd:1" in r.output
    r = cli("canary", "ped:2", "--percent", "20")
    assert r.exit_code == 0 and "ped:2 (20% by camera)" in r.output
    r = cli("list", "--json")
    statuses = {m["ref"]: m["status"] for m in json.loads(r.output)}
    assert statuses == {"ped:1": "staged", "ped:2": "canary", "ped:3": "staged", "pedssd:1": "active"}
    r = cli("rollback")
    assert r.exit_code == 0 and "rollback: canary ped:2 ended" in r.output
    r = cli("show", "pedssd:1")
    assert json.loads(r.output)["status"] == "active"


def test_cli_refusals_are_one_line_with_exit_code_2(cli, tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x80\x04K\x01.")
    r = cli("push", str(bad), "--name", "x", "--format", "yolov8")
    assert r.exit_code == 2 and "Python pickle" in r.output and "Traceback" not in r.output
    r = cli("retire", "nope:1")
    assert r.exit_code == 2 and "nope:1 is not in the model store" in r.output
    r = cli("canary", "ped:1", "--percent", "20", "--by", "hour")
    assert r.exit_code == 2 and "choose camera or frame" in r.output
    r = cli("push", str(PEDSSD / "model.onnx"), "--name", "x", "--input-size", "big")
    assert r.exit_code == 2 and "WIDTHxHEIGHT" in r.output


def test_registry_worker_without_a_token_does_not_start(tmp_path):
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMASS_REGISTRY_TOKEN")}
    r = subprocess.run([sys.executable, "-m", "aimass.cli", "run", "registry"], capture_output=True, text=True,
                       timeout=60, env={**env, "AIMASS_KAFKA_BOOTSTRAP": "127.0.0.1:1",
                                        "AIMASS_MODEL_STORE": str(tmp_path / "store")})
    assert r.returncode == 2
    assert "AIMASS_REGISTRY_TOKEN" in r.stderr and "Traceback" not in r.stderr


def test_ending_a_canary_names_the_one_to_end(registry):
    run(registry.promote("ped:1"))
    run(registry.canary("ped:2", 30))
    with pytest.raises(RoutingError, match="ped:3 is not the canary of group default \\(it has ped:2\\)"):
        run(registry.canary("ped:3", 0))
    assert run(registry.canary("ped:2", 0)).groups["default"].canary is None
