"""The local serving runtime as a real process on 127.0.0.1: it writes ``runtime.json``, starts, resizes,
switches and stops stage servers through its admin API without losing a request under a steady load, keeps
the old replicas serving when a new one fails to start, and leaves no stage server behind on SIGTERM.

The stage servers load the digits classifiers of :mod:`tests.profiling_jobs.digits_variant` (no build, ~1 s
to start). The helpers here are shared with ``tests/actuation/test_local_runtime.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ipa_tasks.serving.load_generator import RequestRecord, constant_workload, cycle_inputs, replay
from ipa_tasks.serving.runtime import build_parser, runtime_file

REPO = Path(__file__).resolve().parents[2]
PIPELINE = "runtime-test"
STAGE = "classify"
SPEC = f"""\
name: {PIPELINE}
sla_s: 2.0
stages:
  - name: {STAGE}
    batch_sizes: [1, 2, 4, 8]
    cores: [1, 2]
    replicas: {{min: 1, max: 3}}
    variants:
      - name: logistic
        model: {{kind: python, uri: "tests.profiling_jobs.digits_variant:logistic"}}
      - name: knn
        model: {{kind: python, uri: "tests.profiling_jobs.digits_variant:nearest_neighbors"}}
      - name: broken
        model: {{kind: python, uri: "tests.profiling_jobs.digits_variant:not_a_variant"}}
"""
START_TIMEOUT_S = 60.0


# --- a runtime process, shared with the target's tests ---------------------------------------------------


@dataclass
class RunningRuntime:
    process: subprocess.Popen[bytes]
    home: Path
    spec_path: Path
    log_path: Path
    url: str = ""
    router: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def write_spec(directory: Path) -> Path:
    path = directory / "spec.yaml"
    path.write_text(SPEC, encoding="utf-8")
    return path


def start_runtime(directory: Path) -> RunningRuntime:
    """A runtime on free ports with IPA_HOME under ``directory``, once it has written runtime.json."""
    home, spec = directory / "home", write_spec(directory)
    log_path = directory / "runtime.log"
    command = [sys.executable, "-m", "ipa_tasks.serving.runtime", "--spec", str(spec), "--home", str(home)]
    command += ["--port", "0", "--router-port-base", "0", "--ready-timeout-s", str(START_TIMEOUT_S)]
    command += ["--drain-timeout-s", "20", "--stop-grace-s", "10"]
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, "IPA_HOME": str(home)}, stdout=out, stderr=subprocess.STDOUT
        )
    runtime = RunningRuntime(process, home, spec, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not runtime_file(home).exists():
        assert process.poll() is None, runtime.log()
        assert time.monotonic() < deadline, runtime.log()
        time.sleep(0.05)
    info = json.loads(runtime_file(home).read_text())
    runtime.url, runtime.router = info["url"], info["pipelines"][PIPELINE]["router"]
    return runtime


def stop_runtime(runtime: RunningRuntime) -> int:
    if runtime.process.poll() is None:
        runtime.process.send_signal(signal.SIGTERM)
    try:
        return runtime.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        runtime.process.kill()
        return runtime.process.wait()


def call(url: str, method: str = "GET", body: Any = None, timeout: float = 120) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); the runtime reaps its children, so a zombie here counts as alive.
    return True


def digit_inputs(count: int = 30) -> list[list[float]]:
    from tests.profiling_jobs.digits_variant import split

    return [row.tolist() for row in split()[1][:count]]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRuntime]:
    running = start_runtime(tmp_path_factory.mktemp("runtime"))
    try:
        yield running
    finally:
        stop_runtime(running)


def put(runtime: RunningRuntime, **config: Any) -> tuple[int, Any]:
    want = {"variant": "logistic", "batch_size": 4, "cores": 1, "replicas": 1, **config}
    return call(f"{runtime.url}/pipelines/{PIPELINE}/stages/{STAGE}", "PUT", want)


def stage_state(runtime: RunningRuntime) -> dict[str, Any]:
    status, body = call(f"{runtime.url}/pipelines/{PIPELINE}")
    assert status == 200, body
    return body["stages"].get(STAGE, {})


def pids(state: dict[str, Any]) -> list[int]:
    return sorted(p["pid"] for p in state["processes"])


def one_request(runtime: RunningRuntime) -> dict[str, Any]:
    status, answer = call(f"{runtime.router}/pipeline", "POST", {"input": digit_inputs(1)[0]}, timeout=30)
    assert status == 200 and answer["dropped"] is False, answer
    return answer


# --- tests -------------------------------------------------------------------------------------------------


def test_help_describes_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--spec" in out and "--router-port-base" in out and "--home" in out


def test_the_runtime_writes_runtime_json_and_serves_its_admin_api(runtime: RunningRuntime) -> None:
    info = json.loads(runtime_file(runtime.home).read_text())
    assert info["pid"] == runtime.process.pid
    assert info["url"].startswith("http://127.0.0.1:") and info["pipelines"][PIPELINE]["router"]
    assert call(f"{runtime.url}/pipelines/nope")[0] == 404
    assert call(f"{runtime.url}/pipelines/{PIPELINE}/stages/nope", "PUT", {})[0] in (400, 404)
    assert put(runtime, variant="nope")[0] == 409
    assert put(runtime, cores=3)[0] == 409
    assert put(runtime, replicas=0)[0] == 400


def test_changes_under_a_steady_load_lose_no_request(runtime: RunningRuntime) -> None:
    status, body = put(runtime, replicas=1)
    assert status == 200, body
    records: list[RequestRecord] = []
    rows = digit_inputs()

    def load() -> None:
        workload = constant_workload(40, 10)
        records.extend(asyncio.run(replay(runtime.router, workload, cycle_inputs(rows), timeout_s=20)))

    loader = threading.Thread(target=load)
    loader.start()
    started = time.monotonic()
    try:
        time.sleep(1.0)
        for change in ({"replicas": 2}, {"variant": "knn", "replicas": 2}, {"variant": "knn", "replicas": 1}):
            status, body = put(runtime, **change)
            assert status == 200, body
        changes_s = time.monotonic() - started
    finally:
        loader.join(timeout=60)
    assert changes_s < 9.5, f"the changes took {changes_s:.1f} s, longer than the load ran"
    outcomes = [(r.outcome, r.reason) for r in records if r.outcome != "ok"]
    assert len(records) == 400 and not outcomes, outcomes[:5]
    served = {json.loads(r.variants)[STAGE] for r in records}
    assert served == {"logistic", "knn"}
    state = stage_state(runtime)
    assert (state["variant"], state["replicas"], state["ready"]) == ("knn", 1, 1)


def test_a_replica_that_fails_to_start_leaves_the_old_ones_serving(runtime: RunningRuntime) -> None:
    status, body = put(runtime, replicas=1)
    assert status == 200, body
    before = stage_state(runtime)
    status, body = put(runtime, variant="broken")
    assert status == 500 and "exited with status 1" in body["error"], body
    after = stage_state(runtime)
    assert pids(after) == pids(before) and after["variant"] == "logistic" and after["ready"] == 1
    assert one_request(runtime)["stages"][0]["variant"] == "logistic"
    status, body = put(runtime, replicas=2, batch_size=2)  # a scale-out whose new replica is fine
    assert status == 200 and body["stages"][STAGE]["ready"] == 2


def test_a_replica_that_dies_leaves_the_router_and_the_next_put_replaces_it(runtime: RunningRuntime) -> None:
    status, body = put(runtime, replicas=2)
    assert status == 200, body
    victim, survivor = pids(body["stages"][STAGE])
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pids(stage_state(runtime)) != [survivor]:
        assert time.monotonic() < deadline, stage_state(runtime)
        time.sleep(0.1)
    state = stage_state(runtime)
    assert (state["replicas"], state["ready"]) == (2, 1), "the stage reports itself short of a replica"
    one_request(runtime)
    status, body = put(runtime, replicas=2)
    assert status == 200 and body["stages"][STAGE]["ready"] == 2 and survivor in pids(body["stages"][STAGE])


def test_one_change_per_stage_at_a_time_and_one_runtime_per_home(runtime: RunningRuntime) -> None:
    assert put(runtime, replicas=1)[0] == 200
    answers: list[tuple[int, Any]] = []
    first = threading.Thread(target=lambda: answers.append(put(runtime, replicas=2)))
    first.start()
    time.sleep(0.3)  # the new replica takes about a second to become ready
    status, body = put(runtime, replicas=3)
    first.join(timeout=60)
    assert status == 409 and "in progress" in body["error"], body
    assert answers and answers[0][0] == 200, answers
    command = [sys.executable, "-m", "ipa_tasks.serving.runtime", "--spec", str(runtime.spec_path)]
    command += ["--home", str(runtime.home), "--port", "0", "--router-port-base", "0"]
    second = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1 and "already serves" in second.stderr, second.stderr
    assert json.loads(runtime_file(runtime.home).read_text())["pid"] == runtime.process.pid


def test_sigterm_stops_every_stage_server_and_removes_runtime_json(runtime: RunningRuntime) -> None:
    status, body = put(runtime, replicas=2)
    assert status == 200, body
    children = pids(body["stages"][STAGE])
    assert len(children) == 2 and all(pid_alive(pid) for pid in children)
    assert stop_runtime(runtime) == 0, runtime.log()
    assert not [pid for pid in children if pid_alive(pid)], "stage servers outlived the runtime"
    assert not runtime_file(runtime.home).exists()
    logs = list((runtime.home / "serving" / PIPELINE / "logs").glob(f"{STAGE}-*.log"))
    assert logs and "stopped after" in "".join(p.read_text() for p in logs)


def exited(pid: int) -> bool:
    """Gone, or a zombie: a runtime killed outright cannot reap its children, and whoever adopts them
    (init here) may not either."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_stage_servers_stop_when_the_runtime_is_killed_outright(tmp_path: Path) -> None:
    runtime = start_runtime(tmp_path)  # its own: the module's runtime is stopped by the test before
    status, body = put(runtime, replicas=2)
    assert status == 200, body
    children = pids(body["stages"][STAGE])
    runtime.process.kill()  # SIGKILL: no handler runs, nothing is drained
    runtime.process.wait()
    deadline = time.monotonic() + 20
    while not all(exited(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(exited(pid) for pid in children), "stage servers outlived a killed runtime"
