"""docker/entrypoint and docker/clean-logs, the two scripts the official Airflow Helm chart expects in its
image (probes and jobs run as ``/entrypoint <command>``; the log-groomer sidecar runs ``/clean-logs``)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAY_S = 86400


def test_the_entrypoint_runs_the_command_it_is_given_with_its_exit_status() -> None:
    done = subprocess.run(
        ["sh", str(REPO / "docker" / "entrypoint"), "sh", "-c", "echo ran $0 $1; exit 3", "a", "b c"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (3, "ran a b c\n")


def test_clean_logs_deletes_old_task_logs_and_keeps_new_ones(tmp_path: Path) -> None:
    logs = tmp_path / "logs" / "dag_id=ipa_adapt" / "run_id=x"
    logs.mkdir(parents=True)
    old, new, other = logs / "old.log", logs / "new.log", logs / "old.json"
    for path in (old, new, other):
        path.write_text("line\n")
    for path in (old, other):
        os.utime(path, (time.time() - 5 * DAY_S, time.time() - 5 * DAY_S))
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__LOG_RETENTION_DAYS": "2"}
    with subprocess.Popen(
        ["sh", str(REPO / "docker" / "clean-logs")], env=env, stdout=subprocess.PIPE, text=True
    ) as groomer:
        try:
            assert groomer.stdout is not None
            first = groomer.stdout.readline()  # printed after the first pass; then it sleeps
        finally:
            groomer.kill()
    assert "removed logs older than 2 days" in first
    assert not old.exists() and new.exists() and other.exists(), "only *.log files past the retention go"
