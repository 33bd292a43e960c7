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
