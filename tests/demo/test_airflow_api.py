"""The demo's Airflow REST client over real HTTP, against a small stateful stand-in of the api-server's
routes it uses (the smoke test runs it against the real api-server): it logs in, logs in again when its
token expires, creates a Variable that does not exist yet, and turns errors into AirflowApiError with the
status. And the demo's way out: ipa_adapt paused, a run the pause caught marked failed, Variables restored."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from rich.console import Console

from ipa_tasks.demo.airflow_api import AirflowApi, AirflowApiError
from ipa_tasks.demo.run import ADAPT_DAG, Demo, DemoOptions, restore_variables, variables_file
from ipa_tasks.settings import Settings


class FakeAirflow(BaseHTTPRequestHandler):
    tokens: ClassVar[list[str]] = []
    expire_next = False
    variables: ClassVar[dict[str, str]] = {}
    paused: ClassVar[dict[str, bool]] = {}
    logins = 0

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def _authorized(self) -> bool:
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in type(self).tokens or type(self).expire_next:
            type(self).expire_next = False
            self._send(401, {"detail": "expired"})
            return False
        return True

    def do_POST(self) -> None:
        if self.path == "/auth/token":
            body = self._body()
            if body != {"username": "admin", "password": "pw"}:
                return self._send(401, {"detail": "bad credentials"})
            type(self).logins += 1
            token = f"t{type(self).logins}"
            type(self).tokens.append(token)
            return self._send(201, {"access_token": token})
        if not self._authorized():
            return None
        if self.path == "/api/v2/variables":
            body = self._body()
            type(self).variables[body["key"]] = body["value"]
            return self._send(201, body)
        return self._send(404, {"detail": "no route"})

    def do_GET(self) -> None:
        if not self._authorized():
            return None
        if self.path.startswith("/api/v2/variables/"):
            key = self.path.rsplit("/", 1)[1]
            if key not in type(self).variables:
                return self._send(404, {"detail": "no such variable"})
            return self._send(200, {"key": key, "value": type(self).variables[key]})
        if self.path == "/api/v2/dags/ipa_adapt":
            return self._send(
                200, {"dag_id": "ipa_adapt", "is_paused": type(self).paused.get("ipa_adapt", True)}
            )
        return self._send(404, {"detail": "no such DAG"})

    def do_DELETE(self) -> None:
        if not self._authorized():
            return None
        key = self.path.rsplit("/", 1)[1]
        if type(self).variables.pop(key, None) is None:
            return self._send(404, {"detail": "no such variable"})
        return self._send(204)

    def do_PATCH(self) -> None:
        if not self._authorized():
            return None
        body = self._body()
        if self.path.startswith("/api/v2/variables/"):
            key = self.path.rsplit("/", 1)[1]
            if key not in type(self).variables:
                return self._send(404, {"detail": "no such variable"})
            type(self).variables[key] = body["value"]
            return self._send(200, body)
        if self.path.startswith("/api/v2/dags/"):
            type(self).paused[self.path.rsplit("/", 1)[1]] = body["is_paused"]
            return self._send(200, body)
        return self._send(404, {"detail": "no route"})


@pytest.fixture
def airflow() -> Iterator[str]:
    FakeAirflow.tokens, FakeAirflow.variables, FakeAirflow.paused, FakeAirflow.logins = [], {}, {}, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAirflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_it_logs_in_once_and_again_when_the_token_expires(airflow: str):
    api = AirflowApi(airflow, "admin", "pw")
    assert api.dag("ipa_adapt") == {"dag_id": "ipa_adapt", "is_paused": True}
    api.set_paused("ipa_adapt", False)
    assert FakeAirflow.logins == 1 and FakeAirflow.paused == {"ipa_adapt": False}
    FakeAirflow.expire_next = True
    assert api.dag("ipa_adapt")["is_paused"] is False
    assert FakeAirflow.logins == 2


def test_a_variable_is_created_when_missing_and_read_back(airflow: str):
    api = AirflowApi(airflow, "admin", "pw")
    assert api.variable("ipa_adapt_pipelines") is None
    api.set_variable("ipa_adapt_pipelines", '["digit-strips"]')
    api.set_variable("ipa_adapt_pipelines", '["language-routing"]')
    assert api.variable("ipa_adapt_pipelines") == '["language-routing"]'
    api.delete_variable("ipa_adapt_pipelines")
    api.delete_variable("never-set")  # already gone: not an error
    assert FakeAirflow.variables == {}


def test_errors_carry_the_status_and_bad_credentials_say_who(airflow: str):
    assert AirflowApi(airflow, "admin", "pw").dag("nope") is None  # 404 on a DAG: not parsed yet
    with pytest.raises(AirflowApiError, match="as user 'admin': HTTP 401") as error:
        AirflowApi(airflow, "admin", "wrong").dag("ipa_adapt")
    assert error.value.status == 401


class RecordingApi:
    """What the demo's way out calls, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.calls.append(("paused", dag_id, paused))

    def runs(self, dag_id: str, limit: int = 100) -> list[dict]:
        return [
            {"dag_run_id": "scheduled__1", "state": "running"},
            {"dag_run_id": "scheduled__0", "state": "success"},
        ]

    def set_run_state(self, dag_id: str, run_id: str, state: str, note: str = "") -> None:
        self.calls.append(("state", run_id, state))

    def set_variable(self, key: str, value: str, description: str = "") -> None:
        self.calls.append(("set", key, value))

    def delete_variable(self, key: str) -> None:
        self.calls.append(("delete", key))

    put_back_variables = AirflowApi.put_back_variables  # the real one, over the recording set and delete


def test_a_demo_that_ends_while_adapting_pauses_ipa_adapt_ends_its_run_and_restores_the_variables(
    tmp_path: Path,
):
    settings = Settings(home=tmp_path / "ipa", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    demo = Demo(DemoOptions(), Console(file=io.StringIO()), settings)
    demo.api = RecordingApi()  # type: ignore[assignment]
    demo.adapting = True
    demo.saved_variables = {"ipa_adapt_pipelines": None, "ipa_adapt_dry_run": "true"}
    demo._leave_airflow_as_found()
    assert demo.api.calls == [  # type: ignore[attr-defined]
        ("paused", ADAPT_DAG, True),
        ("state", "scheduled__1", "failed"),
        ("delete", "ipa_adapt_pipelines"),
        ("set", "ipa_adapt_dry_run", "true"),
    ]


def test_demo_stop_gives_a_kept_up_demos_variables_back(airflow: str, tmp_path: Path):
    home = tmp_path / "ipa"
    (tmp_path / "simple_auth_manager_passwords.json.generated").write_text('{"admin": "pw"}')
    FakeAirflow.variables.update({"ipa_adapt_pipelines": '["demo"]', "ipa_adapt_dry_run": "false"})
    record = {
        "airflow_url": airflow,
        "airflow_home": str(tmp_path),
        "variables": {"ipa_adapt_pipelines": None, "ipa_adapt_dry_run": "true"},
    }
    variables_file(home).parent.mkdir(parents=True)
    variables_file(home).write_text(json.dumps(record))
    lines: list[str] = []
    restore_variables(home, lines.append)
    assert FakeAirflow.variables == {"ipa_adapt_dry_run": "true"}
    assert FakeAirflow.paused == {"ipa_adapt": True}
    assert not variables_file(home).exists() and "as they were before the demo" in lines[0]
