"""The load generator: its arrivals (count per second, inside the second, seeded), workloads from the trace,
a short replay against a fake router over real HTTP (every request recorded, bounded in time), the
summary's SLA violations, and the refusal of any router not on this machine."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytest_asyncio
from aiohttp import web

from ipa_tasks.serving import load_generator
from ipa_tasks.serving.load_generator import (
    LoadGeneratorError,
    RequestRecord,
    arrival_schedule,
    constant_workload,
    cycle_inputs,
    pipeline_endpoint,
    replay,
    scaled_counts,
    summarize,
    trace_workload,
    write_records,
)
from ipa_tasks.serving.router import PASS_THROUGH, Router, create_app, serve_app

Serve = Callable[[web.Application], Awaitable[str]]
SERVED_BY = [
    {"stage": "a", "variant": "va", "batch_size": 2},
    {"stage": "b", "variant": "vb", "batch_size": 1},
]


def fake_router(delay_s: float = 0.0) -> web.Application:
    """Answers input ``i`` as served when ``i % 3 == 0``, dropped when 1, HTTP 500 when 2."""

    async def pipeline(request: web.Request) -> web.Response:
        index = (await request.json())["input"]
        await asyncio.sleep(delay_s)
        if index % 3 == 1:
            return web.json_response(
                {"dropped": True, "reason": "drop-limit", "stages": [], "latency_s": 0.01}
            )
        if index % 3 == 2:
            return web.json_response({"error": "boom"}, status=500)
        answer = {"output": [index], "dropped": False, "stages": SERVED_BY, "latency_s": 0.002}
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/pipeline", pipeline)
    return app


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    async with AsyncExitStack() as stack:

        async def start(app: web.Application) -> str:
            return await stack.enter_async_context(serve_app(app, shutdown_timeout_s=2.0))

        yield start


def test_each_second_gets_its_count_of_arrivals_inside_it_seeded():
    workload = [0, 1, 5, 200, 3]
    schedule = arrival_schedule(workload, seed=7)
    assert len(schedule) == sum(workload)
    seconds = np.floor(schedule).astype(int)
    assert np.bincount(seconds, minlength=len(workload)).tolist() == workload
    assert np.all(np.diff(schedule) >= 0) and schedule.min() > 0 and schedule.max() < len(workload)
    np.testing.assert_array_equal(schedule, arrival_schedule(workload, seed=7))
    assert not np.array_equal(schedule, arrival_schedule(workload, seed=8))


def test_the_gaps_within_a_second_are_exponential_not_even():
    gaps = np.diff(arrival_schedule([5000], seed=0))
    assert 0.9 < gaps.std() / gaps.mean() < 1.1  # an exponential's coefficient of variation is 1


def test_workloads_keep_their_total_when_rates_are_fractional(tmp_path):
    assert constant_workload(2.5, 4).tolist() == [3, 2, 3, 2]
    assert scaled_counts([0.4] * 5).sum() == 2  # rounding each second alone would send nothing
    path = tmp_path / "trace.csv.gz"
    with gzip.open(path, "wt") as file:
        file.write("second,requests\n" + "".join(f"{s},{8 * s + 7}\n" for s in range(10)))
    assert trace_workload(path, start=2, seconds=3, scale=2.0).tolist() == [4, 6, 8]  # int(x / 8) * 2
    with pytest.raises(LoadGeneratorError, match="outside the trace"):
        trace_workload(path, start=8, seconds=3)


@pytest.mark.asyncio
async def test_a_replay_records_every_request_with_its_outcome_latency_and_what_served_it(serve, tmp_path):
    url = await serve(fake_router())
    started = time.monotonic()
    records = await replay(url, constant_workload(4, 3), lambda index: index, seed=1)
    assert 2.0 < time.monotonic() - started < 4.0

    assert [r.index for r in records] == list(range(12))
    assert [r.second for r in records] == [0] * 4 + [1] * 4 + [2] * 4
    for record in records:
        assert record.second <= record.scheduled_s < record.second + 1
        assert record.scheduled_s - 0.01 <= record.sent_s < record.scheduled_s + 0.5
        assert record.latency_s > 0 and record.sent_at is not None
        expected = ("ok", "dropped", "error")[record.index % 3]
        assert record.outcome == expected
    ok = [r for r in records if r.outcome == "ok"]
    assert all(json.loads(r.variants) == {"a": "va", "b": "vb"} for r in ok)
    assert all(json.loads(r.batch_sizes) == {"a": 2, "b": 1} and r.router_latency_s == 0.002 for r in ok)
    assert {r.reason for r in records if r.outcome == "dropped"} == {"drop-limit"}
    assert all(r.reason.startswith("HTTP 500") for r in records if r.outcome == "error")

    for name in ("records.csv", "records.parquet"):
        write_records(records, tmp_path / name)
        reader = pd.read_parquet if name.endswith("parquet") else pd.read_csv
        frame = reader(tmp_path / name)
        assert len(frame) == 12 and frame["outcome"].value_counts().to_dict() == {
            "ok": 4,
            "dropped": 4,
            "error": 4,
        }


@pytest.mark.asyncio
async def test_a_replay_ends_by_its_deadline_and_records_what_it_could_not_send(serve):
    url = await serve(fake_router(delay_s=1.0))
    started = time.monotonic()
    # One request at a time, each timing out after 0.4 s: six due in the first second cannot all go
    # before the deadline of 1 s + 0.4 s.
    records = await replay(url, [6], lambda index: 0, concurrency=1, timeout_s=0.4)
    assert time.monotonic() - started < 2.0
    assert len(records) == 6 and all(r.outcome == "error" for r in records)
    reasons = [r.reason for r in records]
    assert any(reason.startswith("timeout") for reason in reasons)
    assert any(reason.startswith("not sent") for reason in reasons)
    assert all(r.sent_s is None for r in records if r.reason.startswith("not sent"))


def _record(outcome: str, latency_s: float, reason: str = "") -> RequestRecord:
    return RequestRecord(0, 0, 0.0, 0.0, 0.0, latency_s, outcome, reason, 200, None, "{}", "{}")


def test_the_summary_counts_late_dropped_and_failed_requests_as_sla_violations():
    records = [
        _record("ok", 0.1),
        _record("ok", 0.2),
        _record("ok", 0.9),
        _record("dropped", 0.05, "drop-limit"),
        _record("dropped", 0.01, "stage-error"),
        _record("error", 0.3, "HTTP 500"),
    ]
    summary = summarize(records, sla_s=0.5)
    assert (summary.count, summary.ok, summary.dropped, summary.errors) == (6, 3, 2, 1)
    assert (summary.late, summary.sla_violations) == (1, 4)
    assert summary.p50_latency_s == pytest.approx(0.2) and summary.p99_latency_s == pytest.approx(0.886)
    assert summary.drop_reasons == {"drop-limit": 1, "stage-error": 1}
    assert summarize(records).sla_violations == 3  # without an SLA only drops and errors count
    assert summarize([]).p50_latency_s is None


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/pipeline"),
        ("http://127.4.5.6:9/pipeline/", "http://127.4.5.6:9/pipeline"),
        ("http://LOCALHOST:8000/", "http://LOCALHOST:8000/pipeline"),
    ],
)
def test_a_router_on_this_machine_is_accepted(url, endpoint):
    assert pipeline_endpoint(url) == endpoint


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8000",
        "http://example.com",
        "http://127.0.0.1.nip.io",
        "http://0.0.0.0:8000",
        "http://[::1]:80",
    ],
)
def test_a_router_elsewhere_is_refused(url):
    with pytest.raises(LoadGeneratorError, match="only targets a router on this machine"):
        pipeline_endpoint(url)


def test_the_command_line_refuses_a_remote_router_before_doing_anything(capsys, tmp_path):
    argv = ["--url", "http://192.168.1.10:8000", "--trace", str(tmp_path / "missing.csv.gz")]
    assert load_generator.main(argv) == 2
    assert "refusing to send load to '192.168.1.10'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        load_generator.main(["--help"])
    assert done.value.code == 0 and "--rps" in capsys.readouterr().out


@pytest.mark.asyncio
async def test_the_command_line_replays_writes_the_records_and_summarises(serve, tmp_path, capsys):
    url = await serve(fake_router())
    inputs = tmp_path / "inputs.json"
    inputs.write_text("[0, 1, 2]")
    out = tmp_path / "out" / "records.csv"
    argv = ["--url", url, "--rps", "3", "--seconds", "2", "--inputs", str(inputs), "--out", str(out)]
    # In a thread: the command runs its own event loop while this one serves the fake router.
    assert await asyncio.to_thread(load_generator.main, [*argv, "--sla-s", "0.5", "--json"]) == 0
    printed = capsys.readouterr().out
    summary: dict[str, Any] = json.loads(printed[printed.index("{") :])
    assert (summary["count"], summary["ok"], summary["dropped"], summary["errors"]) == (6, 2, 2, 2)
    assert summary["sla_violations"] == 4 and summary["drop_reasons"] == {"drop-limit": 2}
    assert len(pd.read_csv(out)) == 6


def stage_server_like(variant: str) -> web.Application:
    """A stage that echoes its items, answering as the stage server does."""

    async def predict(request: web.Request) -> web.Response:
        items = (await request.json())["items"]
        n = len(items)
        return web.json_response({"outputs": items, "variant": variant, "batch_sizes": [n] * n})

    app = web.Application()
    app.router.add_post("/predict", predict)
    return app


@pytest.mark.asyncio
async def test_a_replay_through_the_real_router_is_counted_by_it(serve, tmp_path):
    replicas = {"a": [await serve(stage_server_like("va"))], "b": [await serve(stage_server_like("vb"))]}
    rate_file = tmp_path / "requests.csv"
    router = Router("p", ["a", "b"], replicas, codec=PASS_THROUGH, rate_file=rate_file)
    async with serve_app(create_app(router)) as url:
        records = await replay(url, [3, 0, 2], cycle_inputs(["hello"]), seed=3)
    assert [r.outcome for r in records] == ["ok"] * 5
    assert {r.variants for r in records} == {json.dumps({"a": "va", "b": "vb"})}
    rows = [tuple(map(int, line.split(","))) for line in rate_file.read_text().splitlines()[1:]]
    seconds = [second for second, _ in rows]
    assert seconds == list(range(seconds[0], seconds[0] + len(rows)))  # a row for every second
    assert sum(count for _, count in rows) == 5


def test_inputs_cycle():
    inputs = cycle_inputs(["a", "b"])
    assert [inputs(i) for i in range(5)] == ["a", "b", "a", "b", "a"]
    with pytest.raises(LoadGeneratorError):
        cycle_inputs([])
