"""The stage server as real processes on free ports of 127.0.0.1: readiness, batching of concurrent
requests, metrics, live batch-size changes (``POST /config`` and the batch-size file), errors, SIGTERM,
a real digits classifier over the array codec; plus the codec and the command line in-process.

The server processes import the test variants below by their uri (``tests.serving.test_stage_server:...``),
so this module keeps its top-level imports light.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipa_tasks.serving.stage_server import (
    ServerFailed,
    build_parser,
    decode_item,
    encode_item,
    free_port,
    main,
    server_command,
    settings_from_args,
    wait_until_ready,
)

REPO = Path(__file__).resolve().parents[2]
PIPELINE = "serving-test"
LOAD_S_VARIABLE, PREDICT_S_VARIABLE = "IPA_TEST_LOAD_S", "IPA_TEST_PREDICT_S"
START_TIMEOUT_S = 60.0
SPEC = f"""\
name: {PIPELINE}
sla_s: 1.0
stages:
  - name: echo
    batch_sizes: [1, 2, 4, 8]
    variants:
      - name: slow
        model: {{kind: python, uri: "tests.serving.test_stage_server:slow_echo"}}
      - name: broken
        model: {{kind: python, uri: "tests.serving.test_stage_server:broken"}}
      - name: published
        model: {{kind: reference, uri: "yolov5n"}}
  - name: classify
    variants:
      - name: logistic
        model: {{kind: python, uri: "tests.profiling_jobs.digits_variant:logistic"}}
"""


# --- test variants, loaded by the server processes ------------------------------------------------------


@dataclass(frozen=True)
class SlowEcho:
    """Answers each item with itself and its batch's size, after ``delay_s`` per batch; ``"boom"`` fails the
    batch. Slow on purpose, so concurrent requests queue up and share batches."""

    delay_s: float

    def predict(self, items: Sequence[Any]) -> list[Any]:
        time.sleep(self.delay_s)
        if any(isinstance(item, str) and item == "boom" for item in items):
            raise ValueError("boom in the batch")
        return [{"echo": item, "batch": len(items)} for item in items]

    def held_out(self) -> tuple[Sequence[Any], Sequence[Any]]:
        return ["warm-up"], ["warm-up"]


def slow_echo() -> SlowEcho:
    """Takes ``$IPA_TEST_LOAD_S`` to load (so readiness can be seen turning), then ``$IPA_TEST_PREDICT_S``
    per batch."""
    time.sleep(float(os.environ.get(LOAD_S_VARIABLE, "0")))
    return SlowEcho(float(os.environ.get(PREDICT_S_VARIABLE, "0.2")))


def broken() -> SlowEcho:
    raise RuntimeError("this variant cannot load")


# --- running servers ------------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    batch_file: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def launch(
    tmp: Path,
    *,
    stage: str = "echo",
    variant: str = "slow",
    batch_size: int = 4,
    env: dict[str, str] | None = None,
) -> Server:
    """A stage server whose contract variables come from the environment, as in a pod."""
    spec = tmp / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    port = free_port()
    batch_file = tmp / "batch_size"
    contract = {
        "IPA_PIPELINE": PIPELINE,
        "IPA_STAGE": stage,
        "IPA_VARIANT": variant,
        "IPA_BATCH_SIZE": str(batch_size),
        "IPA_THREADS": "1",
        "IPA_BATCH_SIZE_FILE": str(batch_file),
    }
    command = [
        sys.executable,
        "-m",
        "ipa_tasks.serving.stage_server",
        "--spec",
        str(spec),
        "--port",
        str(port),
    ]
    log_path = tmp / f"{variant}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--max-wait-ms", "50"],
            cwd=REPO,
            env={**os.environ, **contract, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Server(process, f"http://127.0.0.1:{port}", log_path, batch_file)


def terminate(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def call(
    url: str, path: str, payload: Any = None, *, raw: bytes | None = None, timeout: float = 30
) -> tuple[int, Any]:
    """(status, JSON body) of a GET, or of a POST when there is a payload."""
    data = raw if raw is not None else (None if payload is None else json.dumps(payload).encode())
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def predict(url: str, items: list[Any]) -> dict[str, Any]:
    status, body = call(url, "/predict", {"items": items})
    assert status == 200, body
    return body


def concurrently(url: str, requests: list[list[Any]]) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(lambda items: predict(url, items), requests))


def set_batch_size(url: str, value: int) -> None:
    status, body = call(url, "/config", {"batch_size": value})
    assert status == 200 and body["batch_size"] == value, body


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def metrics(url: str) -> dict[tuple[str, str], float]:
    """``(sample name, label set) -> value`` of the server's ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    samples: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value
    return samples


STAGE_LABELS = f"pipeline={PIPELINE},stage=echo,variant=slow"


@dataclass
class Started:
    server: Server
    health_while_loading: int
    ready_while_loading: tuple[int, Any]


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """One slow-echo server for the module (1.5 s to load, 0.2 s per batch, batch size 4, 50 ms wait).

    Readiness is observed here, while it loads; every test sets the batch size it needs.
    """
    server = launch(tmp_path_factory.mktemp("echo"), env={LOAD_S_VARIABLE: "1.5", PREDICT_S_VARIABLE: "0.2"})
    try:
        health = 0

        def healthy() -> bool:
            nonlocal health
            assert server.process.poll() is None, server.log()
            try:
                health = call(server.url, "/healthz", timeout=1)[0]
            except OSError:
                return False
            return health == 200

        eventually(healthy, START_TIMEOUT_S)
        ready_while_loading = call(server.url, "/readyz")
        wait_until_ready(server.url, timeout_s=START_TIMEOUT_S, process=server.process)
        yield Started(server, health, ready_while_loading)
    finally:
        terminate(server)


# --- the echo server ------------------------------------------------------------------------------------


def test_readiness_is_503_while_loading_and_200_once_loaded(echo: Started) -> None:
    assert echo.health_while_loading == 200, "liveness answers while the model loads"
    status, body = echo.ready_while_loading
    assert status == 503 and body["ready"] is False and "loading variant slow" in body["reason"]
    status, body = call(echo.server.url, "/readyz")
    assert status == 200 and body["ready"] is True
    assert (body["pipeline"], body["stage"], body["variant"]) == (PIPELINE, "echo", "slow")
    assert body["pid"] == echo.server.process.pid
    assert "loaded variant slow" in echo.server.log()


def test_concurrent_requests_share_batches_up_to_the_batch_size(echo: Started) -> None:
    url = echo.server.url
    set_batch_size(url, 4)
    answers = concurrently(url, [[f"r{i}"] for i in range(8)])
    sizes = [size for answer in answers for size in answer["batch_sizes"]]
    assert max(sizes) > 1, f"8 concurrent requests behind a 0.2 s batch must share batches, got {sizes}"
    assert max(sizes) <= 4
    for i, answer in enumerate(answers):
        assert answer["variant"] == "slow"
        assert [o["echo"] for o in answer["outputs"]] == [f"r{i}"]
        assert answer["batch_sizes"] == [o["batch"] for o in answer["outputs"]]
        assert answer["service_s"][0] >= 0.2 and answer["queue_s"][0] >= 0
    several = predict(url, ["a", "b", "c"])
    assert [o["echo"] for o in several["outputs"]] == ["a", "b", "c"]
    assert len(several["batch_sizes"]) == len(several["queue_s"]) == len(several["service_s"]) == 3


def test_arrays_round_trip_through_the_codec(echo: Started) -> None:
    crops = np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28)
    answer = predict(echo.server.url, [encode_item(crops), encode_item({"text": "hallo", "n": np.int64(3)})])
    first, second = (decode_item(o)["echo"] for o in answer["outputs"])
    assert first.dtype == np.float32 and np.array_equal(first, crops)
    assert second == {"text": "hallo", "n": 3}


def test_metrics_expose_the_stage_series_with_labels_and_counts(echo: Started) -> None:
    url = echo.server.url
    set_batch_size(url, 4)
    before = metrics(url)
    for _ in range(3):
        predict(url, ["x", "y"])
    after = metrics(url)

    def delta(name: str) -> float:
        return after[(name, STAGE_LABELS)] - before.get((name, STAGE_LABELS), 0.0)

    assert delta("ipa_stage_requests_total") == 3
    assert delta("ipa_stage_items_total") == 6
    assert delta("ipa_stage_batch_size_sum") == 6, "every item was in exactly one batch"
    assert 3 <= delta("ipa_stage_batch_size_count") <= 6
    assert delta("ipa_stage_service_seconds_count") == delta("ipa_stage_batch_size_count")
    assert delta("ipa_stage_latency_seconds_count") == 6
    assert delta("ipa_stage_latency_seconds_sum") >= 6 * 0.2
    assert after[("ipa_stage_max_batch_size", STAGE_LABELS)] == 4
    assert after[("ipa_stage_queue_length", STAGE_LABELS)] == 0
    assert ("ipa_stage_latency_seconds_bucket", f"le=0.25,{STAGE_LABELS}") in after
    assert not [name for name, _ in after if name.endswith("_created")], "no _created series"


def test_post_config_changes_the_batch_size_without_a_restart(echo: Started) -> None:
    url = echo.server.url
    set_batch_size(url, 4)
    set_batch_size(url, 2)
    status, ready = call(url, "/readyz")
    assert status == 200 and ready["batch_size"] == 2 and ready["pid"] == echo.server.process.pid
    assert metrics(url)[("ipa_stage_max_batch_size", STAGE_LABELS)] == 2
    sizes = [s for answer in concurrently(url, [[i] for i in range(6)]) for s in answer["batch_sizes"]]
    assert max(sizes) <= 2
    assert "batch size changed from 4 to 2 because POST /config" in echo.server.log()
    assert call(url, "/config", {"batch_size": 0})[0] == 400
    assert call(url, "/config", {"batch_size": "8"})[0] == 400
    assert call(url, "/config", {"threads": 2})[0] == 400
    status, body = call(url, "/config", {"variant": "other"})
    assert status == 409 and "restart" in body["error"]
    assert echo.server.process.poll() is None


def test_the_batch_size_file_changes_the_batch_size_without_a_restart(echo: Started) -> None:
    url, path = echo.server.url, echo.server.batch_file

    def batch_size() -> int:
        return call(url, "/readyz")[1]["batch_size"]

    set_batch_size(url, 4)
    path.write_text("3\n")
    eventually(lambda: batch_size() == 3)
    assert f"batch size changed from 4 to 3 because {path} says 3" in echo.server.log()
    # A later POST stands until the file is rewritten: an unchanged file is not applied again.
    set_batch_size(url, 5)
    time.sleep(1.5)
    assert batch_size() == 5
    path.write_text("not a number")
    time.sleep(1.5)
    assert batch_size() == 5 and "ignoring batch-size file" in echo.server.log()
    path.write_text("6")
    eventually(lambda: batch_size() == 6)
    assert call(url, "/readyz")[1]["pid"] == echo.server.process.pid


def test_bad_requests_and_model_errors_are_answered_and_the_server_serves_on(echo: Started) -> None:
    url = echo.server.url
    set_batch_size(url, 1)
    status, body = call(url, "/predict", {"items": ["boom"]})
    assert status == 500 and "boom in the batch" in body["error"]
    assert call(url, "/predict", raw=b"{not json")[0] == 400
    assert call(url, "/predict", {"items": 3})[0] == 400
    assert call(url, "/predict", {"items": [{"__ndarray__": {"dtype": "<f4"}}]})[0] == 400
    assert predict(url, ["fine"])["outputs"] == [{"echo": "fine", "batch": 1}]
    assert metrics(url)[("ipa_stage_errors_total", STAGE_LABELS)] >= 1


# --- servers of their own -------------------------------------------------------------------------------


def test_sigterm_finishes_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    (tmp_path / "batch_size").write_text("2")
    server = launch(tmp_path, batch_size=4, env={PREDICT_S_VARIABLE: "0.6"})
    try:
        ready = wait_until_ready(server.url, timeout_s=START_TIMEOUT_S, process=server.process)
        assert ready["batch_size"] == 2, "at start the batch-size file wins over IPA_BATCH_SIZE"
        with ThreadPoolExecutor(max_workers=4) as pool:
            in_flight = [pool.submit(call, server.url, "/predict", {"items": [i]}) for i in range(4)]
            eventually(lambda: metrics(server.url)[("ipa_stage_items_total", STAGE_LABELS)] == 4)
            server.process.send_signal(signal.SIGTERM)
            answers = [future.result(timeout=30) for future in in_flight]
        assert [status for status, _ in answers] == [200] * 4, answers
        assert sorted(body["outputs"][0]["echo"] for _, body in answers) == [0, 1, 2, 3]
        assert server.process.wait(timeout=15) == 0
        with pytest.raises(OSError):
            call(server.url, "/healthz", timeout=2)
        log = server.log()
        assert "stopping on SIGTERM" in log and "stopped after" in log
    finally:
        terminate(server)


def test_a_real_classifier_serves_numpy_inputs(tmp_path: Path) -> None:
    from tests.profiling_jobs.digits_variant import logistic

    server = launch(tmp_path, stage="classify", variant="logistic", batch_size=8)
    try:
        ready = wait_until_ready(server.url, timeout_s=START_TIMEOUT_S, process=server.process)
        assert ready["variant"] == "logistic" and ready["batch_size"] == 8
        inputs = logistic().test_inputs[:12]
        answer = predict(server.url, [encode_item(row) for row in inputs])
        assert answer["outputs"] == logistic().predict(inputs)
        assert max(answer["batch_sizes"]) == 8, "12 items of one request make a full batch and the rest"
    finally:
        terminate(server)


def test_a_variant_that_fails_to_load_ends_the_process_with_status_1(tmp_path: Path) -> None:
    server = launch(tmp_path, variant="broken")
    try:
        with pytest.raises(ServerFailed, match="exited with status 1"):
            wait_until_ready(server.url, timeout_s=START_TIMEOUT_S, process=server.process)
        assert "loading variant broken failed: RuntimeError: this variant cannot load" in server.log()
    finally:
        terminate(server)


# --- in-process ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("nope", "stage 'echo' has no variant 'nope'"),
        ("published", "only kind 'python' variants can be served"),
    ],
)
def test_a_variant_the_spec_cannot_serve_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], variant: str, message: str
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    argv = [
        "--spec",
        str(spec),
        "--pipeline",
        PIPELINE,
        "--stage",
        "echo",
        "--variant",
        variant,
        "--port",
        "0",
    ]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_spec_of_another_pipeline_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    assert main(["--spec", str(spec), "--pipeline", "video", "--stage", "echo", "--variant", "slow"]) == 2
    assert f"is pipeline '{PIPELINE}', not 'video'" in capsys.readouterr().err


def test_the_command_line_defaults_from_the_deployment_environment() -> None:
    env = {
        "IPA_PIPELINE": "digit-strips",
        "IPA_STAGE": "classify",
        "IPA_VARIANT": "cls_mlp_s",
        "IPA_BATCH_SIZE": "8",
        "IPA_THREADS": "2",
        "IPA_BATCH_SIZE_FILE": "/etc/ipa/stage/batch_size",
    }
    settings = settings_from_args(build_parser(env).parse_args([]))
    assert (settings.pipeline, settings.stage, settings.variant) == ("digit-strips", "classify", "cls_mlp_s")
    assert (settings.batch_size, settings.threads, settings.port) == (8, 2, 8000)
    assert settings.spec == "digit-strips", "the spec defaults to the shipped one of the pipeline's name"
    assert settings.batch_size_file == Path("/etc/ipa/stage/batch_size")
    assert settings.max_wait_s == pytest.approx(0.005) and settings.host == "127.0.0.1"
    flags = settings_from_args(build_parser(env).parse_args(["--batch-size", "2", "--max-wait-ms", "20"]))
    assert flags.batch_size == 2 and flags.max_wait_s == pytest.approx(0.02)
    with pytest.raises(SystemExit):
        build_parser({}).parse_args([])
    with pytest.raises(SystemExit):
        build_parser({**env, "IPA_BATCH_SIZE": "0"}).parse_args([])


def test_server_command_builds_a_runnable_command_line() -> None:
    command = server_command(
        pipeline="digit-strips",
        stage="detect",
        variant="det_cc",
        batch_size=4,
        port=8123,
        batch_size_file="/f",
    )
    assert command[:3] == [sys.executable, "-m", "ipa_tasks.serving.stage_server"]
    parsed = settings_from_args(build_parser({}).parse_args(command[3:]))
    assert (parsed.variant, parsed.batch_size, parsed.port, parsed.batch_size_file) == (
        "det_cc",
        4,
        8123,
        Path("/f"),
    )


def test_the_codec_round_trips_nested_arrays_dataclasses_and_scalars() -> None:
    @dataclass(frozen=True)
    class Box:
        x0: float
        x1: float

    @dataclass(frozen=True)
    class Detections:
        boxes: tuple[Box, ...]
        crops: np.ndarray

    detections = Detections((Box(1.0, 2.5), Box(3.0, 4.0)), np.ones((2, 28, 28), dtype=np.float32))
    value = {"d": detections, "ints": np.arange(3, dtype=np.int64), "pair": ("en", "hello"), "none": None}
    encoded = encode_item(value)
    text = json.dumps(encoded)  # must be plain JSON
    decoded = decode_item(json.loads(text))
    assert decoded["d"]["boxes"] == [{"x0": 1.0, "x1": 2.5}, {"x0": 3.0, "x1": 4.0}]
    assert decoded["d"]["crops"].shape == (2, 28, 28) and decoded["d"]["crops"].dtype == np.float32
    assert decoded["d"]["crops"].flags.writeable
    assert np.array_equal(decoded["ints"], [0, 1, 2]) and decoded["pair"] == ["en", "hello"]
    assert decoded["none"] is None
    assert encode_item(np.float32(0.5)) == 0.5 and encode_item(np.bool_(True)) is True
    big_endian = np.array([1, 2], dtype=">i4")
    assert np.array_equal(decode_item(encode_item(big_endian)), [1, 2])
    assert decode_item(encode_item(np.zeros((0, 28, 28)))).shape == (0, 28, 28)
    assert np.array_equal(
        decode_item(encode_item(np.arange(6).reshape(2, 3).T)), np.arange(6).reshape(2, 3).T
    )
    with pytest.raises(TypeError):
        encode_item({1: "not a str key"})
    with pytest.raises(TypeError):
        encode_item(np.array([object()]))
    with pytest.raises(TypeError):
        encode_item({1, 2})
    with pytest.raises(ValueError):
        decode_item({"__ndarray__": {"dtype": "<f4", "shape": [3], "data": "AAAA"}})
    with pytest.raises(ValueError):
        decode_item({"__ndarray__": {"dtype": "|O", "shape": [1], "data": ""}})
