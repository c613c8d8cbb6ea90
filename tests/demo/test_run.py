"""The demo's pure parts: the Airflow components' environment, the login it prints, the first plan's load,
the decisions of the demo's time span, and its refusal to start over a previous demo's services."""

from __future__ import annotations

import io
import json
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from ipa_tasks.adaptation.decisions import day_table_path
from ipa_tasks.demo.run import (
    Demo,
    DemoError,
    DemoOptions,
    airflow_environment,
    airflow_login,
    decisions_between,
    initial_load,
    port_is_free,
)
from ipa_tasks.demo.services import start_service, stop_services, write_services
from ipa_tasks.settings import Settings


def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "ipa", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")


def test_every_component_gets_loopback_one_secret_the_shared_home_and_no_cluster(tmp_path: Path):
    base = {"PATH": "/usr/bin", "AIRFLOW_CONN_IPA_KUBERNETES": "{}", "AIRFLOW__CORE__DAGS_FOLDER": "/mine"}
    env = airflow_environment(
        base,
        settings=settings(tmp_path),
        airflow_home=tmp_path / "af",
        port=8123,
        tracking_uri="http://127.0.0.1:5123",
        interval_s=15,
        jwt_secret="s3cret",
    )
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1" and env["AIRFLOW__API__PORT"] == "8123"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8123/execution/"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "s3cret"
    assert env["IPA_HOME"] == str(tmp_path / "ipa") and env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5123"
    assert env["IPA_ADAPT_INTERVAL_S"] == "15"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/mine"  # the caller's stays
    assert "AIRFLOW_CONN_IPA_KUBERNETES" not in env
    assert env["PATH"].startswith(str(Path(sys.executable).parent))


def test_the_login_is_the_first_user_with_the_generated_password(tmp_path: Path):
    env = {
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "ops:admin,viewer:viewer",
    }
    assert airflow_login(env) == ("ops", "")  # not generated yet
    (tmp_path / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"ops": "pw1"}))
    assert airflow_login(env) == ("ops", "pw1")
    assert airflow_login({**env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}) == ("", "")


def test_the_first_plan_is_for_the_first_minutes_peak_plus_a_margin():
    assert initial_load([5, 30, 10] + [100] * 100) == pytest.approx(110.0)
    assert initial_load([5, 30, 10]) == pytest.approx(33.0)
    assert initial_load([]) == 1.0


def test_the_decisions_of_the_demo_span_come_from_each_day_it_touches(tmp_path: Path):
    home = tmp_path / "ipa"
    for day, times in {
        "2026-12-01": ["23:59:30", "23:59:50"],
        "2026-12-02": ["00:00:10", "00:05:00"],
    }.items():
        path = day_table_path(home, "p", day)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = ["time,configuration,forecast_rps"] + [f"{day}T{t}+00:00,,12.5" for t in times]
        path.write_text("\n".join(rows) + "\n")
    start = datetime(2026, 12, 1, 23, 59, 40, tzinfo=UTC)
    end = datetime(2026, 12, 2, 0, 1, tzinfo=UTC)
    table = decisions_between(home, "p", start, end)
    assert list(table["time"]) == ["2026-12-01T23:59:50+00:00", "2026-12-02T00:00:10+00:00"]
    assert list(table["configuration"]) == ["", ""]  # text, not NaN
    assert decisions_between(home, "other", start, end).empty


def test_a_port_in_use_is_seen():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert not port_is_free(taken.getsockname()[1])


def test_the_demo_refuses_to_start_over_a_previous_demos_services(tmp_path: Path):
    home = settings(tmp_path).home
    service, process = start_service(
        "mlflow-server",
        [sys.executable, "-c", "import time; time.sleep(600)"],
        os.environ,
        tmp_path / "l.log",
    )
    try:
        write_services(home, [service])
        demo = Demo(DemoOptions(), Console(file=io.StringIO()), settings(tmp_path))
        with pytest.raises(DemoError, match=r"still up: mlflow-server.*make demo-stop"):
            demo.check_nothing_runs()
    finally:
        stop_services([service], log=lambda _: None)
        process.wait(10)
