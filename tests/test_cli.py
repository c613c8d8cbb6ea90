"""The ``ipa`` command, golden paths and input errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ipa_tasks.cli import main
from ipa_tasks.profiles import write_profile
from tests.optimizer.instances import two_stage_spec


@pytest.fixture
def toy_files(tmp_path: Path) -> tuple[Path, Path]:
    spec, profile = two_stage_spec()
    spec_path = tmp_path / "toy.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude={"source_path"})))
    profile_path = write_profile(profile, tmp_path / "toy.parquet")
    return spec_path, profile_path


def test_solve_prints_the_plan(toy_files, capsys):
    spec, profile = toy_files
    assert main(["solve", "--spec", str(spec), "--profiles", str(profile), "--load", "10"]) == 0
    out = capsys.readouterr().out
    for words in ("toy at 10 rps, policy ipa (optimal)", "detect", "classify", "objective", "solver "):
        assert words in out


def test_shipped_pipeline_by_name_says_its_profiles_are_synthetic(capsys):
    assert main(["solve", "--spec", "video", "--load", "10"]) == 0
    assert "note: all profile rows are synthetic, not measurements" in capsys.readouterr().out
    assert main(["validate-spec", "video", "nlp"]) == 0
    assert capsys.readouterr().out.count("ok:") == 2


def test_zero_time_limit_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["solve", "--spec", "video", "--load", "10", "--time-limit", "0"])
    assert "must be > 0 seconds" in capsys.readouterr().err


def test_solve_json_and_current_plan(toy_files, capsys, tmp_path):
    spec, profile = toy_files
    assert main(["solve", "--spec", str(spec), "--profiles", str(profile), "--load", "1", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["status"] == "optimal" and first["latency_s"] <= first["sla_s"]
    assert {"accuracy", "accuracy_term", "cost_term", "batch_term", "change_term", "objective"} <= set(
        first["terms"]
    )
    current = tmp_path / "current.json"
    current.write_text(json.dumps(first))
    args = ["solve", "--spec", str(spec), "--profiles", str(profile), "--load", "40", "--json"]
    assert main([*args, "--current", str(current), "--policy", "fa2-low"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["policy"] == "fa2-low"
    assert [s["variant"] for s in second["stages"]] == ["small", "s"]
    assert all(s["changed"] for s in second["stages"]), "fa2-low switches away from the accurate variants"


def test_degraded_plan_is_flagged(toy_files, capsys):
    spec, profile = toy_files
    assert main(["solve", "--spec", str(spec), "--profiles", str(profile), "--load", "100000"]) == 0
    assert "DEGRADED" in capsys.readouterr().out


def test_validate_spec(toy_files, tmp_path, capsys):
    spec, _ = toy_files
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace("sla_s: 2.0", "sla_s: -2.0"))
    assert main(["validate-spec", str(spec)]) == 0
    assert "ok:" in capsys.readouterr().out
    assert main(["validate-spec", str(spec), str(bad)]) == 2
    assert "bad.yaml: sla_s:" in capsys.readouterr().err


def test_input_errors_exit_2_with_one_line(toy_files, tmp_path, capsys):
    spec, _ = toy_files
    missing = tmp_path / "none.csv"
    assert main(["solve", "--spec", str(spec), "--profiles", str(missing), "--load", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none.csv" in err


def test_sweep_writes_every_plan(toy_files, tmp_path, capsys):
    spec, profile = toy_files
    out = tmp_path / "plans.json"
    args = ["sweep", "--spec", str(spec), "--profiles", str(profile), "--loads", "1,10,100000"]
    assert main([*args, "--json-out", str(out)]) == 0
    plans = json.loads(out.read_text())
    assert [p["load_rps"] for p in plans] == [1, 10, 100000]
    assert [p["degraded"] for p in plans] == [False, False, True]
    assert "degraded" in capsys.readouterr().out


@pytest.mark.parametrize("command", [[], ["solve"], ["validate-spec"], ["sweep"]])
def test_every_command_has_help(command):
    result = subprocess.run(
        [sys.executable, "-m", "ipa_tasks.cli", *command, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "usage: ipa" in result.stdout
