"""The router over real HTTP on loopback, against small fake stage servers started by each test: stage
order and fan-out, spreading over replicas, replica sets changed while requests are in flight, drops (the
drop limit, failing stages), the metrics and the per-second rate file the adaptation loop reads."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from ipa_tasks.monitoring.rate_file import RateFileSource
from ipa_tasks.serving import router as router_module
from ipa_tasks.serving.router import (
    PASS_THROUGH,
    Codec,
    Router,
    RouterAdminError,
    RouterClient,
    create_app,
    serve_app,
)

Serve = Callable[[web.Application], Awaitable[str]]


@dataclass
class FakeStage:
    """A stage server speaking the stage server's HTTP contract: ``transform`` maps each item to its
    output; it can be slow (``delay_s``), fail (``status``) or answer no outputs at all (``mute``), and
    keeps the items of every call."""

    variant: str = "v1"
    transform: Callable[[Any], Any] = lambda item: item
    delay_s: float = 0.0
    status: int = 200
    mute: bool = False
    received: list[list[Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/predict", self._predict)
        return app

    async def _predict(self, request: web.Request) -> web.Response:
        items = (await request.json())["items"]
        self.received.append(items)
        await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return web.json_response({"error": "the model failed"}, status=self.status)
        outputs = [] if self.mute else [self.transform(item) for item in items]
        n = len(outputs)
        return web.json_response(
            {"outputs": outputs, "variant": self.variant, "batch_sizes": [n] * n, "queue_s": [0.0] * n}
        )


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start aiohttp apps on free loopback ports; all are stopped when the test ends."""
    async with AsyncExitStack() as stack:

        async def start(app: web.Application) -> str:
            return await stack.enter_async_context(serve_app(app, shutdown_timeout_s=2.0))

        yield start


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def ask(session: aiohttp.ClientSession, url: str, item: Any = "x") -> dict[str, Any]:
    async with session.post(f"{url}/pipeline", json={"input": item}) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.json()


async def metrics(session: aiohttp.ClientSession, url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of ``/metrics`` keyed by (name, labels)."""
    async with session.get(f"{url}/metrics") as answer:
        text = await answer.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**values: str) -> frozenset:
    return frozenset(values.items())


async def start_router(serve: Serve, stages: dict[str, list[str]], **options: Any) -> tuple[Router, str]:
    router = Router("p", list(stages), stages, codec=PASS_THROUGH, **options)
    return router, await serve(create_app(router))


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def until(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


@pytest.mark.asyncio
async def test_stages_run_in_order_and_list_outputs_fan_out(serve, session):
    detect = FakeStage("det", lambda item: [] if item == "blank" else [f"{item}-a", f"{item}-b"])
    classify = FakeStage("cls", str.upper)
    stages = {"detect": [await serve(detect.app())], "classify": [await serve(classify.app())]}
    _, url = await start_router(serve, stages)

    answer = await ask(session, url, "x")
    assert answer["dropped"] is False and answer["output"] == ["X-A", "X-B"]
    assert detect.received == [["x"]] and classify.received == [["x-a", "x-b"]]
    first, second = answer["stages"]
    assert first["stage"] == "detect" and first["variant"] == "det" and first["batch_size"] == 1
    assert first["replica"] == stages["detect"][0]
    assert second["stage"] == "classify" and second["variant"] == "cls"
    assert second["batch_size"] == 2 and second["items"] == 2
    assert first["seconds"] > 0 and answer["latency_s"] >= first["seconds"] + second["seconds"]

    # A detector that finds nothing: the classifier is not called and the pipeline's output is empty.
    empty = await ask(session, url, "blank")
    assert empty["output"] == [] and empty["stages"][1]["items"] == 0 and len(classify.received) == 1


@pytest.mark.asyncio
async def test_a_pipeline_handoff_gives_the_next_stage_what_it_needs(serve, session):
    from ipa_tasks.demo_pipelines.handoffs import language_routing

    identify = FakeStage("lid", lambda text: "de" if "ü" in text else "en")
    classify = FakeStage("txt", lambda pair: f"{pair[0]}:{pair[1]}")
    stages = {"identify": [await serve(identify.app())], "classify": [await serve(classify.app())]}
    _, url = await start_router(serve, stages, handoff=language_routing)
    answer = await ask(session, url, "Menü öffnen")
    # The classifier gets the identifier's language with the identifier's own input, not the language alone.
    assert classify.received == [[["de", "Menü öffnen"]]] and answer["output"] == ["de:Menü öffnen"]


@pytest.mark.asyncio
async def test_a_non_list_output_is_one_item_and_the_codec_decides_what_is_a_list(serve, session):
    # Items travel wrapped as {"v": value}; a wrapped list fans out into wrapped elements.
    codec = Codec(encode=lambda value: {"v": value}, decode=lambda encoded: encoded["v"])

    def split_words(item: dict[str, str]) -> Any:
        if item["v"] == "?":
            return "not encoded"
        return {"v": list(item["v"])} if len(item["v"]) > 1 else item

    first = FakeStage(transform=split_words)
    second = FakeStage(transform=lambda item: {"v": item["v"] * 2})
    router = Router(
        "p", ["a", "b"], {"a": [await serve(first.app())], "b": [await serve(second.app())]}, codec=codec
    )
    url = await serve(create_app(router))

    assert (await ask(session, url, {"v": "ab"}))["output"] == [{"v": "aa"}, {"v": "bb"}]
    assert second.received[-1] == [{"v": "a"}, {"v": "b"}]
    assert (await ask(session, url, {"v": "z"}))["output"] == [{"v": "zz"}]
    assert second.received[-1] == [{"v": "z"}]
    unreadable = await ask(session, url, {"v": "?"})  # an output the codec cannot decode
    assert unreadable["dropped"] and (unreadable["reason"], unreadable["stage"]) == ("stage-error", "a")


def test_without_the_stage_server_module_items_pass_through_unchanged(monkeypatch):
    monkeypatch.setattr(router_module, "_STAGE_SERVER_MODULE", "ipa_tasks.serving.no_such_module")
    assert router_module.default_codec() is PASS_THROUGH


@pytest.mark.asyncio
async def test_requests_spread_over_replicas_and_avoid_a_busy_one(serve, session):
    one, two = FakeStage(), FakeStage()
    _, url = await start_router(serve, {"s": [await serve(one.app()), await serve(two.app())]})
    for _ in range(6):
        await ask(session, url)
    assert len(one.received) == len(two.received) == 3  # idle replicas take turns

    slow, fast = FakeStage(delay_s=0.5), FakeStage()
    _, url = await start_router(serve, {"s": [await serve(slow.app()), await serve(fast.app())]})
    pending = asyncio.create_task(ask(session, url))
    await until(lambda: len(slow.received) == 1)
    for _ in range(3):
        await ask(session, url)
    assert (await pending)["dropped"] is False
    assert len(slow.received) == 1 and len(fast.received) == 3  # fewest requests in flight wins


@pytest.mark.asyncio
async def test_a_removed_replica_gets_no_new_requests_and_its_request_in_flight_completes(serve, session):
    old, new = FakeStage("old", delay_s=0.5), FakeStage("new")
    old_url, new_url = await serve(old.app()), await serve(new.app())
    router, url = await start_router(serve, {"s": [old_url]})
    pending = asyncio.create_task(ask(session, url))
    await until(lambda: len(old.received) == 1)

    assert router.set_replicas("s", [new_url]) == [old_url]
    assert router.replicas("s") == [new_url] and router.draining("s") == {old_url: 1}
    for _ in range(3):
        assert (await ask(session, url))["stages"][0]["replica"] == new_url
    assert len(old.received) == 1
    assert not await router.wait_drained("s", timeout_s=0.05)

    finished = await pending
    assert finished["dropped"] is False and finished["stages"][0]["replica"] == old_url
    assert await router.wait_drained("s", timeout_s=1.0) and router.draining("s") == {}


@pytest.mark.asyncio
async def test_the_admin_endpoints_change_a_stage_and_readiness_follows(serve, session):
    stage = FakeStage()
    stage_url = await serve(stage.app())
    _, url = await start_router(serve, {"a": [stage_url], "b": []})
    client = RouterClient(url)
    async with session.get(f"{url}/readyz") as ready:
        assert ready.status == 503 and (await ready.json())["without_replicas"] == ["b"]
    answer = await ask(session, url)
    assert answer["dropped"] and (answer["reason"], answer["stage"]) == ("no-replicas", "b")

    changed = await asyncio.to_thread(client.set_replicas, "b", [stage_url + "/"])
    assert changed == {"stage": "b", "replicas": [stage_url], "removed": [], "draining": {}}
    async with session.get(f"{url}/readyz") as ready, session.get(f"{url}/healthz") as healthy:
        assert ready.status == 200 and healthy.status == 200
    assert (await ask(session, url))["dropped"] is False
    status = await asyncio.to_thread(client.status)
    assert [s["replicas"] for s in status["stages"]] == [[stage_url], [stage_url]]
    assert await asyncio.to_thread(client.wait_drained, "b", 1.0)

    with pytest.raises(RouterAdminError, match="HTTP 404"):
        await asyncio.to_thread(client.set_replicas, "nope", [stage_url])
    with pytest.raises(RouterAdminError, match=r"HTTP 400.*http"):
        await asyncio.to_thread(client.set_replicas, "b", ["ftp://somewhere"])
    assert (await asyncio.to_thread(client.status))["ready"] is True  # a refused change changes nothing


@pytest.mark.asyncio
async def test_a_request_older_than_the_drop_limit_is_answered_dropped_and_counted(serve, session):
    slow = FakeStage(delay_s=1.0)
    _, url = await start_router(serve, {"s": [await serve(slow.app())]}, drop_limit_s=0.3)
    started = time.monotonic()
    answer = await ask(session, url)
    assert time.monotonic() - started < 0.9  # answered at the limit, not when the stage is done
    assert answer["dropped"] is True and (answer["reason"], answer["stage"]) == ("drop-limit", "s")
    assert answer["output"] is None and answer["latency_s"] >= 0.3
    samples = await metrics(session, url)
    assert samples[("ipa_router_dropped_total", labels(pipeline="p", reason="drop-limit"))] == 1
    assert samples[("ipa_router_latency_seconds_count", labels(pipeline="p", outcome="dropped"))] == 1


@pytest.mark.asyncio
async def test_a_failing_stage_is_answered_dropped_with_the_reason_without_hanging(serve, session):
    good_url = await serve(FakeStage(transform=lambda item: item + "!").app())
    cases = {"stage-error": await serve(FakeStage(status=500).app()), "stage-unreachable": closed_port_url()}
    started = time.monotonic()
    for reason, second_url in cases.items():
        _, url = await start_router(serve, {"one": [good_url], "two": [second_url]}, drop_limit_s=20)
        answer = await ask(session, url)
        assert answer["dropped"] and (answer["reason"], answer["stage"]) == (reason, "two")
        assert [s["stage"] for s in answer["stages"]] == ["one"] and answer["detail"]
        samples = await metrics(session, url)
        assert samples[("ipa_router_dropped_total", labels(pipeline="p", reason=reason))] == 1
    _, url = await start_router(serve, {"one": [await serve(FakeStage(mute=True).app())]}, drop_limit_s=20)
    answer = await ask(session, url)
    assert answer["reason"] == "stage-error" and "0 outputs for 1 item" in answer["detail"]
    assert time.monotonic() - started < 5


@pytest.mark.asyncio
async def test_metrics_count_every_request(serve, session):
    _, url = await start_router(serve, {"s": [await serve(FakeStage().app())]})
    for _ in range(4):
        await ask(session, url)
    async with session.post(f"{url}/pipeline", data=b"not json") as bad:
        assert bad.status == 400
    samples = await metrics(session, url)
    assert samples[("ipa_router_requests_total", labels(pipeline="p"))] == 5  # every arrival is load
    assert samples[("ipa_router_latency_seconds_count", labels(pipeline="p", outcome="ok"))] == 4
    assert samples[("ipa_router_in_flight", labels(pipeline="p"))] == 0
    for reason in router_module.DROP_REASONS:  # present from the start, so rate() has a zero
        assert samples[("ipa_router_dropped_total", labels(pipeline="p", reason=reason))] == 0


async def _sleep_until_fraction(fraction: float) -> int:
    """Sleep until ``fraction`` into the next whole second; return that second."""
    now = time.time()
    second = int(now) + 1
    await asyncio.sleep(second + fraction - now)
    return second


@pytest.mark.asyncio
async def test_the_rate_file_has_one_row_per_second_with_zeros_and_the_counts_sent(serve, session, tmp_path):
    path = tmp_path / "serving" / "p" / "requests.csv"
    async with AsyncExitStack() as stack:
        router = Router(
            "p", ["s"], {"s": [await serve(FakeStage().app())]}, codec=PASS_THROUGH, rate_file=path
        )
        url = await stack.enter_async_context(serve_app(create_app(router)))
        first = await _sleep_until_fraction(0.2)
        await asyncio.gather(*(ask(session, url) for _ in range(3)))
        await asyncio.sleep(first + 2.2 - time.time())  # second first+1 gets nothing
        await asyncio.gather(*(ask(session, url) for _ in range(2)))
        await asyncio.sleep(first + 3.3 - time.time())  # the background task has written first+2

        rows = dict(line.split(",") for line in path.read_text().splitlines()[1:])
        counts = {int(second): int(n) for second, n in rows.items()}
        assert list(counts) == list(range(min(counts), first + 3))  # every second, none twice
        assert {s: counts[s] for s in (first, first + 1, first + 2)} == {first: 3, first + 1: 0, first + 2: 2}
        assert sum(counts.values()) == 5
        rates = RateFileSource(path).rates(3, now=time.time())  # fresh and readable by the loop
        assert rates.tolist() == [3, 0, 2]
    # Stopped: the partial last second is written too, and the file's total is what the router received.
    total = sum(int(line.split(",")[1]) for line in path.read_text().splitlines()[1:])
    assert total == 5


def test_the_command_line_serves_until_terminated(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rate_file = tmp_path / "requests.csv"
    command = [sys.executable, "-m", "ipa_tasks.serving.router", "--pipeline", "p", "--stages", "a,b"]
    command += ["--replicas", "a=http://127.0.0.1:1", "--port", str(port), "--rate-file", str(rate_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        status = _poll_ready(f"http://127.0.0.1:{port}", process)
        assert status == 503  # stage b has no replicas yet
        RouterClient(f"http://127.0.0.1:{port}").set_replicas("b", ["http://127.0.0.1:2"])
        assert _poll_ready(f"http://127.0.0.1:{port}", process) == 200
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert process.returncode == 0, output
    assert rate_file.read_text().startswith("timestamp,requests\n")


def _poll_ready(url: str, process: subprocess.Popen) -> int:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the router did not start")


def test_the_command_line_has_help_and_refuses_bad_arguments(capsys):
    with pytest.raises(SystemExit) as done:
        router_module.main(["--help"])
    assert done.value.code == 0 and "/pipeline" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        router_module.main(["--pipeline", "p", "--stages", "a", "--replicas", "a"])
    assert done.value.code == 2 and "STAGE=URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        router_module.main(["--pipeline", "p"])
    assert "--spec" in capsys.readouterr().err
