"""`aimass gateway run` refuses a bad gateway file with file:line; `aimass gateway bandwidth` reports
the saving; the example and demo gateway files are valid."""

from pathlib import Path

from typer.testing import CliRunner

from aimass.cli import app
from aimass_gateway.config import load_gateway_file

GATEWAYS = Path(__file__).parents[2] / "services" / "gateway" / "gateways"
runner = CliRunner()


def test_shipped_gateway_files_are_valid():
    ex = load_gateway_file(GATEWAYS / "example.yaml")
    assert [c.id for c in ex.cameras] == ["cam-gate", "cam-lobby", "cam-desk", "cam-test"]
    assert ex.sensor("temp-server").input_unit == "F"
    demo = load_gateway_file(GATEWAYS / "demo.yaml")
    assert all(c.source.startswith("scene:") and c.gating is not None for c in demo.cameras)


def test_run_refuses_a_bad_file_naming_the_line(tmp_path):
    bad = tmp_path / "gw.yaml"
    bad.write_text("cameras:\n  - id: cam-a\n    source: rtsp://h/s\n    fps: 0\n")
    r = runner.invoke(app, ["gateway", "run", "--config", str(bad), "--seconds", "1"])
    assert r.exit_code == 1
    assert "gw.yaml:4: cameras.0.fps:" in r.output.replace("\n", "")


def test_bandwidth_command(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("site: {id: s}\ncameras:\n  - {id: cam-empty, width: 128, height: 96, fps: 5, "
                    "scene: {background: yard, actors: []}}\n")
    r = runner.invoke(app, ["gateway", "bandwidth", "--site", str(site), "--seconds", "20"],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    row = next(line for line in r.output.splitlines() if "cam-empty" in line)
    assert "100 " in row and " 2 " in row and "98 %" in row  # 100 frames, 2 sent (first + keep-alive at 10 s)
