"""The few calls of Airflow's REST API (``/api/v2``) the demo makes, over plain HTTP with a JWT.

What: log in (``POST /auth/token`` of the simple auth manager with the user's password, or ``GET
/auth/token`` when every user is an admin), read a DAG, pause and unpause it, trigger a run with a conf, read
runs and their task instances, and set or delete a Variable.

Why the REST API and not Airflow's Python modules: the demo drives a running Airflow as its UI does, so what
it does shows in the UI and in the audit log, and it never touches the metadata database from outside.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

TIMEOUT_S = 30.0


class AirflowApiError(RuntimeError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AirflowApi:
    def __init__(self, url: str, username: str = "", password: str = "") -> None:
        self.url = url.rstrip("/")
        self.username, self.password = username, password
        self._token = ""

    # --- DAGs and runs ---

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG's record, or None while the dag-processor has not parsed it yet."""
        try:
            return self._call("GET", f"/api/v2/dags/{quote(dag_id)}")
        except AirflowApiError as exc:
            if exc.status == 404:
                return None
            raise

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._call("PATCH", f"/api/v2/dags/{quote(dag_id)}", {"is_paused": paused})

    def trigger(self, dag_id: str, conf: Mapping[str, Any], note: str = "") -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf)}
        if note:
            body["note"] = note
        return str(self._call("POST", f"/api/v2/dags/{quote(dag_id)}/dagRuns", body)["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}")

    def runs(self, dag_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The DAG's newest runs first."""
        path = f"/api/v2/dags/{quote(dag_id)}/dagRuns?order_by=-run_after&limit={limit}"
        return list(self._call("GET", path)["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances?limit=1000"
        return list(self._call("GET", path)["task_instances"])

    # --- Variables ---

    def variable(self, key: str) -> str | None:
        try:
            return str(self._call("GET", f"/api/v2/variables/{quote(key)}")["value"])
        except AirflowApiError as exc:
            if exc.status == 404:
                return None
            raise

    def set_run_state(self, dag_id: str, run_id: str, state: str, note: str = "") -> None:
        body: dict[str, Any] = {"state": state}
        if note:
            body["note"] = note
        self._call("PATCH", f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}", body)

    def set_variable(self, key: str, value: str, description: str = "") -> None:
        body = {"key": key, "value": value, "description": description}
        try:
            self._call("PATCH", f"/api/v2/variables/{quote(key)}", body)
        except AirflowApiError as exc:
            if exc.status != 404:
                raise
            self._call("POST", "/api/v2/variables", body)

    def put_back_variables(self, values: Mapping[str, str | None]) -> None:
        """Give each Variable the value it had; one that did not exist (None) is deleted."""
        for key, value in values.items():
            if value is None:
                self.delete_variable(key)
            else:
                self.set_variable(key, value)

    def delete_variable(self, key: str) -> None:
        try:
            self._call("DELETE", f"/api/v2/variables/{quote(key)}")
        except AirflowApiError as exc:
            if exc.status != 404:
                raise

    # --- HTTP ---

    def _login(self) -> str:
        if self.username:
            body = json.dumps({"username": self.username, "password": self.password}).encode()
            request = urllib.request.Request(
                f"{self.url}/auth/token", data=body, headers={"Content-Type": "application/json"}
            )
        else:
            request = urllib.request.Request(f"{self.url}/auth/token")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
                return str(json.loads(answer.read())["access_token"])
        except urllib.error.HTTPError as exc:
            who = f"user {self.username!r}" if self.username else "no credentials (all admins)"
            raise AirflowApiError(
                f"cannot log in to Airflow at {self.url} as {who}: HTTP {exc.code}", exc.code
            ) from None
        except (OSError, ValueError, KeyError) as exc:
            raise AirflowApiError(f"cannot log in to Airflow at {self.url}: {exc}") from None

    def _call(self, method: str, path: str, body: Any = None, retry_login: bool = True) -> Any:
        if not self._token:
            self._token = self._login()
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
                text = answer.read()
                return json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and retry_login:  # the token expired
                self._token = ""
                return self._call(method, path, body, retry_login=False)
            detail = exc.read().decode("utf-8", "replace")[:300]
            raise AirflowApiError(f"{method} {path}: HTTP {exc.code}: {detail}", exc.code) from None
        except (OSError, ValueError) as exc:
            raise AirflowApiError(f"{method} {self.url}{path}: {type(exc).__name__}: {exc}") from None
