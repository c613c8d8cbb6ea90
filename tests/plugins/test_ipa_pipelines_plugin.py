"""The pipelines plugin in a real ``airflow api-server`` (SQLite, simple auth manager, this repository's
``plugins/``), over HTTP: Airflow lists it with its UI view; every endpoint refuses a request without a
login (401) or with a forged token (403); with a JWT from ``/auth/token``, or with only the UI's ``_token``
cookie (what the UI's iframe sends), the page and the JSON show what runs, the last decision's reason and
the link to the day's MLflow run; an unknown pipeline is a 404 that says which pipelines there are.

The day table and the MLflow run are written by the loop's own record functions, before the server starts.
One server for the module (it takes about 10 s to start).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ipa_tasks.adaptation.decisions import EXPERIMENT, append_decision, decision_row, log_to_mlflow
from ipa_tasks.demo.run import airflow_environment, airflow_login
from ipa_tasks.demo.services import answers, start_service, stop_services, wait_until
from ipa_tasks.serving.stage_server import free_port
from ipa_tasks.settings import Settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
PIPELINE = "digit-strips"
MLFLOW_UI = "http://mlflow.example.test:5000"
REASON = "the load exceeds what the largest variant serves <at 1 core>"
STAGES = [
    {"stage": "detect", "variant": "d", "batch_size": 2, "cores": 1, "replicas": 3},
    {"stage": "classify", "variant": "c", "batch_size": 8, "cores": 1, "replicas": 1},
]
RUNNING_BEFORE = {
    "detect": {"variant": "d", "batch_size": 1, "cores": 1, "replicas": 1},
    "classify": {"variant": "c", "batch_size": 8, "cores": 1, "replicas": 1},
}


@dataclass(frozen=True)
class Server:
    url: str
    token: str
    run_id: str
    experiment_id: str


def _tick(status: str, reason: str = "") -> dict:
    return {
        "pipeline": PIPELINE,
        "observation": {"rates": [20.0, 25.0], "source": "local"},
        "forecast": {"rps": 27.5, "forecaster": "window-max", "horizon_s": 40},
        "plan": {
            "policy": "ipa",
            "solver": "highs",
            "status": "optimal",
            "degraded": bool(reason),
            "reason": reason,
            "total_cores": 4,
            "terms": {"objective": 1.0, "accuracy": 0.93},
            "stages": STAGES,
        },
        "running": RUNNING_BEFORE,
        "steps": [{"kind": "scale_out"}],
        "apply": {"status": status, "duration_s": 0.2, "message": "applied 1 step(s) in 0.20 s"},
    }


def _record(settings: Settings) -> str:
    """Two ticks a minute ago (the last one applied the plan); the day's MLflow run id."""
    rows = [
        decision_row(_tick("dry_run"), "tick-1", datetime.now(UTC) - timedelta(seconds=90)),
        decision_row(_tick("applied", REASON), "tick-2", datetime.now(UTC) - timedelta(seconds=60)),
    ]
    for row in rows:
        day = append_decision(settings.home, PIPELINE, row)
        run_id = log_to_mlflow(settings.tracking_uri, PIPELINE, row, day)
    return run_id


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("plugin")
    settings = Settings(home=root / "ipa", tracking_uri=f"sqlite:///{root / 'ipa' / 'mlflow.db'}")
    run_id = _record(settings)
    from mlflow import MlflowClient

    experiment_id = MlflowClient(settings.tracking_uri).get_experiment_by_name(EXPERIMENT).experiment_id

    port = free_port()
    env = airflow_environment(
        os.environ,
        settings=settings,
        airflow_home=root / "airflow",
        port=port,
        tracking_uri=settings.tracking_uri,
        interval_s=30,
        jwt_secret=secrets.token_urlsafe(32),
    )
    env.update(
        {
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "IPA_MLFLOW_UI_URL": MLFLOW_UI,
        }
    )
    migrated = subprocess.run(
        [AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, check=False
    )
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    service, process = start_service("airflow-api-server", [AIRFLOW, "api-server"], env, root / "api.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{url}/api/v2/monitor/health"), service, process, 90)
        username, password = airflow_login(env)
        body = json.dumps({"username": username, "password": password}).encode()
        login = urllib.request.Request(f"{url}/auth/token", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(login, timeout=30) as answer:
            token = json.loads(answer.read())["access_token"]
        yield Server(url, token, run_id, experiment_id)
    finally:
        stop_services([service], grace_s=10, log=lambda _: None)
        process.wait(10)


def get(server: Server, path: str, *, token: str | None = None, cookie: str | None = None) -> tuple[int, str]:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if cookie is not None:
        headers["Cookie"] = f"_token={cookie}"
    request = urllib.request.Request(server.url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


ENDPOINTS = ("/ipa/", "/ipa/pipelines", f"/ipa/pipelines/{PIPELINE}", "/ipa/api/pipelines")


def test_airflow_lists_the_plugin_with_its_app_and_its_view_in_the_navigation(server: Server):
    status, text = get(server, "/api/v2/plugins", token=server.token)
    assert status == 200
    plugins = {p["name"]: p for p in json.loads(text)["plugins"]}
    plugin = plugins["ipa_pipelines"]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/ipa"]
    (view,) = plugin["external_views"]
    assert view["href"] == "ipa/pipelines" and view["destination"] == "nav"
    assert view["url_route"] == "ipa-pipelines"
    status, text = get(server, "/api/v2/plugins/importErrors", token=server.token)
    assert status == 200 and "ipa_pipelines" not in text


@pytest.mark.parametrize("path", [*ENDPOINTS, f"/ipa/api/pipelines/{PIPELINE}", "/ipa/pipelines/nope"])
def test_without_a_login_every_endpoint_is_refused(server: Server, path: str):
    status, text = get(server, path)
    assert status == 401 and "Not authenticated" in text
    assert PIPELINE not in text
    status, _ = get(server, path, token="not-a-jwt")
    assert status == 403


def test_with_a_token_the_json_says_what_runs_the_last_reason_and_links_the_mlflow_run(server: Server):
    status, text = get(server, f"/ipa/api/pipelines/{PIPELINE}", token=server.token)
    assert status == 200, text
    summary = json.loads(text)
    assert summary["running"]["configuration"] == "detect=d/b2/c1/x3; classify=c/b8/c1/x1"
    assert summary["running"]["since_applied"] is True
    assert (
        summary["decisions"][0]["reason"] == REASON and summary["decisions"][0]["apply_status"] == "applied"
    )
    assert summary["ticks"] == 2 and len(summary["series"]["time"]) == 2
    run_url = f"{MLFLOW_UI}/#/experiments/{server.experiment_id}/runs/{server.run_id}"
    assert [r["url"] for r in summary["mlflow"]["runs"]] == [run_url]
    assert summary["mlflow"]["error"] == ""


def test_with_a_token_the_page_shows_the_same(server: Server):
    status, page = get(server, f"/ipa/pipelines/{PIPELINE}", token=server.token)
    assert status == 200, page
    assert "<h1>digit-strips</h1>" in page and "<code>detect=d/b2/c1/x3; classify=c/b8/c1/x1</code>" in page
    assert "the load exceeds what the largest variant serves &lt;at 1 core&gt;" in page
    assert f'href="{MLFLOW_UI}/#/experiments/{server.experiment_id}/runs/{server.run_id}"' in page
    assert "data:image/png;base64," in page
    status, index = get(server, "/ipa/pipelines", token=server.token)
    assert status == 200 and f'<a href="/ipa/pipelines/{PIPELINE}">{PIPELINE}</a>' in index


def test_the_ui_session_cookie_alone_is_a_login(server: Server):
    # What the Airflow UI's iframe sends: no Authorization header, the _token cookie of the UI's login.
    status, page = get(server, f"/ipa/pipelines/{PIPELINE}", cookie=server.token)
    assert status == 200 and "detect=d/b2/c1/x3" in page
    status, _ = get(server, f"/ipa/pipelines/{PIPELINE}", cookie="not-a-jwt")
    assert status == 403


def test_an_unknown_pipeline_is_a_404_that_names_the_known_ones(server: Server):
    status, text = get(server, "/ipa/api/pipelines/nope", token=server.token)
    assert status == 404 and "no pipeline 'nope'" in json.loads(text)["detail"]
    status, page = get(server, "/ipa/pipelines/nope", token=server.token)
    assert status == 404 and "no pipeline &#x27;nope&#x27;" in page and "digit-strips" in page


def test_a_shipped_pipeline_without_decisions_says_how_to_get_some(server: Server):
    status, page = get(server, "/ipa/pipelines/video", token=server.token)
    assert status == 200 and "No decisions recorded for video" in page and "make adapt" in page
