from pathlib import Path

from typer.testing import CliRunner

from aimass.cli import app

E2E_SITE = Path(__file__).parents[1] / "e2e" / "site.yaml"
runner = CliRunner()


def test_rules_validate_accepts_a_good_file():
    r = runner.invoke(app, ["rules", "validate", str(E2E_SITE)])
    assert r.exit_code == 0, r.output
    assert "valid" in r.output and "3 rules" in r.output


def test_rules_validate_names_file_and_field(tmp_path):
    bad = tmp_path / "site.yaml"
    bad.write_text(E2E_SITE.read_text().replace("zone: restricted", "zone: nowhere", 1))
    r = runner.invoke(app, ["rules", "validate", str(bad)])
    assert r.exit_code == 1
    assert str(bad) in r.output.replace("\n", "") and "nowhere" in r.output


def test_stack_env_without_a_stack_says_what_to_do(tmp_path):
    r = runner.invoke(app, ["stack", "env", "--state-dir", str(tmp_path)])
    assert r.exit_code == 1 and "aimass stack up" in r.output


def _run_worker(name: str, **env):
    import os
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "aimass.cli", "run", name], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "AIMASS_KAFKA_BOOTSTRAP": "127.0.0.1:1", **env})


def test_worker_with_a_bad_model_folder_stops_with_what_to_do(tmp_path):
    r = _run_worker("detector", AIMASS_MODEL_DIR=str(tmp_path / "nowhere"))
    assert r.returncode == 2
    assert "nowhere" in r.stderr and "AIMASS_MODEL_DIR" in r.stderr and "Traceback" not in r.stderr


def test_worker_with_a_bad_site_file_stops_naming_the_field(tmp_path):
    bad = tmp_path / "site.yaml"
    bad.write_text(E2E_SITE.read_text().replace("type: sensor_threshold", "type: telepathy"))
    r = _run_worker("rules", AIMASS_SITE_FILE=str(bad))
    assert r.returncode == 2
    assert str(bad) in r.stderr and "rules.2" in r.stderr and "Traceback" not in r.stderr


def test_rules_validate_shows_how_ids_spread_over_partitions(monkeypatch):
    demo = Path(__file__).parents[2] / "services" / "gateway" / "sites" / "demo.yaml"
    monkeypatch.setenv("AIMASS_PARTITIONS_FRAMES", "4")
    r = runner.invoke(app, ["rules", "validate", str(demo)], env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    frames = next(line for line in r.output.splitlines() if "frames topic" in line)
    assert "0: cam-gate, cam-yard" in frames and "2: -" in frames
    assert "so detector workers that split these partitions can get unequal loads" in r.output
    assert "set AIMASS_PARTITIONS_FRAMES before the topics are created" in r.output
    monkeypatch.setenv("AIMASS_PARTITIONS_FRAMES", "12")  # one camera per partition: nothing to warn about
    r = runner.invoke(app, ["rules", "validate", str(demo)], env={"COLUMNS": "400"})
    assert r.exit_code == 0 and "frames topic's 12 partitions" in r.output
    assert "detector workers that split" not in r.output


def test_registry_refuses_several_processes():
    r = runner.invoke(app, ["run", "registry", "--processes", "2"])
    assert r.exit_code == 1 and "one HTTP API" in r.output and "AIMASS_REGISTRY_PORT" in r.output


def test_run_all_takes_process_counts_from_the_settings_not_the_flag():
    r = runner.invoke(app, ["run", "all", "--processes", "2"])
    assert r.exit_code == 1 and "AIMASS_SINK_PROCESSES" in r.output
