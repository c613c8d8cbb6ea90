"""The local serving runtime: one long-running process that serves pipelines on this machine.

Run ``python -m ipa_tasks.serving.runtime --spec SPEC [--spec SPEC2 ...]`` (``--help`` for the options).

Why a process of its own: each Airflow task is a short-lived process, so the stage servers cannot belong to
the task that starts them. This process owns them instead. Per pipeline it runs the router in-process (on
its own port; arrivals counted in ``<IPA_HOME>/serving/<p>/requests.csv``) and supervises the stage-server
subprocesses (one per replica, on free ports of 127.0.0.1, in sessions of their own, output in
``<IPA_HOME>/serving/<p>/logs/<stage>-<port>.log``). The local target
(:mod:`ipa_tasks.actuation.local_runtime`) changes what runs through the admin API, found in
``<IPA_HOME>/serving/runtime.json`` (``{"url", "pid", "pipelines": {p: {"router": url}}}``, written
atomically at start, removed on a clean exit).

Admin API (loopback only, JSON):

* ``GET /pipelines/<p>`` -> per deployed stage ``{"variant", "batch_size", "cores", "replicas", "ready",
  "processes": [{"pid", "url", "ready"}]}``; ``ready`` counts the replicas answering ``/readyz`` now.
* ``PUT /pipelines/<p>/stages/<stage>`` ``{"variant", "batch_size", "cores", "replicas"}`` brings the stage
  there without losing a request: new replicas (more of them, or all of them for a new variant or core
  count) must pass ``/readyz`` before the router gets them; replicas going away leave the router first,
  drain, then get SIGTERM (SIGKILL after a grace) and are reaped; a batch-size-only change is a
  ``POST /config`` to each replica. 200 with the stage's new state; 400/404 for a bad request, 409 for what
  the spec does not offer or a change of the same stage in progress, 500 when a replica fails to start (it
  is stopped and the old replicas keep serving).
* ``DELETE /pipelines/<p>/stages/<stage>`` stops every replica of the stage.

SIGTERM or SIGINT stops the routers, then every stage server, removes ``runtime.json`` and exits 0.
A replica that dies on its own is taken out of the router and reported not ready; the next ``PUT`` of the
stage starts a replacement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ipa_tasks.actuation.config import StageConfig
from ipa_tasks.atomic_files import atomic_write_text
from ipa_tasks.demo_pipelines.handoffs import handoff_for
from ipa_tasks.serving.locations import ROUTER_PORT_BASE, RUNTIME_PORT, pipeline_dir, runtime_file
from ipa_tasks.serving.router import Router, create_app, rate_file_path, serve_app
from ipa_tasks.serving.stage_server import PARENT_PID_VARIABLE, free_port, server_command
from ipa_tasks.spec import PipelineSpec, SpecError, load_spec, resolve_spec_path

MODULE = "ipa_tasks.serving.runtime"
HOST = "127.0.0.1"
DEFAULT_PORT, DEFAULT_ROUTER_PORT_BASE = RUNTIME_PORT, ROUTER_PORT_BASE
READY_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 30.0
STOP_GRACE_S = 15.0
MONITOR_S = 1.0
log = logging.getLogger(MODULE)


class ChangeError(Exception):
    """A change the runtime refused or could not make; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- replicas ---------------------------------------------------------------------------------------------


@dataclass
class Replica:
    """One stage-server process and the URL it serves on."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class StageState:
    config: StageConfig | None = None
    replicas: list[Replica] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class Timeouts:
    ready_s: float = READY_TIMEOUT_S
    drain_s: float = DRAIN_TIMEOUT_S
    grace_s: float = STOP_GRACE_S


async def _http_ok(session: aiohttp.ClientSession, url: str, timeout_s: float = 1.0) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as answer:
            return answer.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def wait_ready(session: aiohttp.ClientSession, replica: Replica, timeout_s: float) -> None:
    """Until the replica's ``/readyz`` answers 200; ChangeError(500) if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not replica.alive():
            raise ChangeError(
                500,
                f"the stage server at {replica.url} exited with status {replica.process.returncode} "
                f"before it was ready; see {replica.log_path}",
            )
        if await _http_ok(session, replica.url + "/readyz"):
            return
        if time.monotonic() >= deadline:
            raise ChangeError(
                500,
                f"the stage server at {replica.url} was not ready after {timeout_s:g} s; "
                f"see {replica.log_path}",
            )
        await asyncio.sleep(0.05)


async def stop_replica(replica: Replica, grace_s: float) -> None:
    """SIGTERM, SIGKILL (its whole session) after ``grace_s``, then reap."""
    process = replica.process
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    if process.poll() is None:
        log.warning(
            "stage server %s (pid %d) ignored SIGTERM for %g s; killing it", replica.url, replica.pid, grace_s
        )
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait)
    log.info("stopped stage server %s (pid %d, status %s)", replica.url, replica.pid, process.returncode)


async def stop_replicas(replicas: Sequence[Replica], grace_s: float) -> None:
    await asyncio.gather(*(stop_replica(r, grace_s) for r in replicas))


# --- one pipeline ------------------------------------------------------------------------------------------


class PipelineRuntime:
    """One pipeline: its router and the stage servers of each stage."""

    def __init__(self, spec: PipelineSpec, spec_path: Path, home: Path, timeouts: Timeouts) -> None:
        self.spec = spec
        self.spec_path = spec_path
        self.dir = pipeline_dir(home, spec.name)
        self.timeouts = timeouts
        self.router = Router(
            spec.name,
            spec.stage_names,
            handoff=handoff_for(spec.name),
            rate_file=rate_file_path(home, spec.name),
        )
        self.router_url = ""
        self.stages = {name: StageState() for name in spec.stage_names}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        """Stop every stage server (the router is stopped by whoever serves it)."""
        everything = [r for state in self.stages.values() for r in state.replicas]
        await stop_replicas(everything, self.timeouts.grace_s)
        for state in self.stages.values():
            state.replicas, state.config = [], None
        if self._session is not None:
            await self._session.close()

    # -- reading --

    async def describe(self) -> dict[str, Any]:
        stages = {}
        for name, state in self.stages.items():
            if state.config is not None and state.replicas:
                stages[name] = await self._describe_stage(state)
        return {"pipeline": self.spec.name, "router": self.router_url, "stages": stages}

    async def _describe_stage(self, state: StageState) -> dict[str, Any]:
        assert state.config is not None
        ready = await asyncio.gather(
            *(_http_ok(self.session, r.url + "/readyz") if r.alive() else _false() for r in state.replicas)
        )
        processes = [
            {"pid": r.pid, "url": r.url, "ready": ok} for r, ok in zip(state.replicas, ready, strict=True)
        ]
        return {**asdict(state.config), "ready": sum(ready), "processes": processes}

    # -- changing --

    def _state(self, stage: str) -> StageState:
        if stage not in self.stages:
            raise ChangeError(
                404, f"pipeline {self.spec.name} has no stage {stage!r}; stages: {self.spec.stage_names}"
            )
        return self.stages[stage]

    def check(self, stage: str, want: StageConfig) -> None:
        """ChangeError(409) for what the spec does not offer."""
        spec_stage = self.spec.stage(stage)
        try:
            spec_stage.variant(want.variant)
        except KeyError as exc:
            raise ChangeError(409, str(exc.args[0])) from None
        if want.cores not in spec_stage.cores:
            raise ChangeError(
                409, f"stage {stage} offers {spec_stage.cores} cores per replica, not {want.cores}"
            )
        if want.replicas < 1 or want.batch_size < 1:
            raise ChangeError(400, "replicas and batch_size must be at least 1 (DELETE the stage to stop it)")

    async def put(self, stage: str, want: StageConfig) -> None:
        state = self._state(stage)
        self.check(stage, want)
        if state.lock.locked():
            raise ChangeError(409, f"a change of stage {stage} is in progress; try again when it is done")
        async with state.lock:
            self._forget_dead(stage, state)
            have = state.config
            if have is None or not state.replicas or (have.variant, have.cores) != (want.variant, want.cores):
                await self._replace_all(stage, state, want)
            else:
                await self._resize(stage, state, have, want)
            state.config = want

    async def delete(self, stage: str) -> None:
        state = self._state(stage)
        if state.lock.locked():
            raise ChangeError(409, f"a change of stage {stage} is in progress; try again when it is done")
        async with state.lock:
            await self._retire(stage, state, state.replicas)
            state.config = None

    async def _start(self, stage: str, want: StageConfig, count: int) -> list[Replica]:
        """``count`` new replicas, all ready (not yet in the router); on any failure all are stopped."""
        replicas: list[Replica] = []
        try:
            for _ in range(count):
                replicas.append(self._launch(stage, want))
            await asyncio.gather(*(wait_ready(self.session, r, self.timeouts.ready_s) for r in replicas))
        except BaseException:
            await stop_replicas(replicas, self.timeouts.grace_s)
            raise
        return replicas

    def _launch(self, stage: str, want: StageConfig) -> Replica:
        port = free_port(HOST)
        command = server_command(
            pipeline=self.spec.name,
            stage=stage,
            variant=want.variant,
            batch_size=want.batch_size,
            port=port,
            threads=want.cores,
            spec=self.spec_path,
            host=HOST,
        )
        logs = self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{stage}-{port}.log"
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # The server stops itself when this process dies, even by SIGKILL (stop_with_parent).
                env={**os.environ, PARENT_PID_VARIABLE: str(os.getpid())},
            )
        log.info(
            "started %s/%s %s on port %d (pid %d)", self.spec.name, stage, want.variant, port, process.pid
        )
        return Replica(process, f"http://{HOST}:{port}", log_path)

    async def _replace_all(self, stage: str, state: StageState, want: StageConfig) -> None:
        new = await self._start(stage, want, want.replicas)
        old = state.replicas
        self.router.set_replicas(stage, [r.url for r in new])
        state.replicas = new
        await self._drain_and_stop(stage, old)

    async def _resize(self, stage: str, state: StageState, have: StageConfig, want: StageConfig) -> None:
        extra = max(want.replicas - len(state.replicas), 0)
        new = await self._start(stage, want, extra) if extra else []
        if want.batch_size != have.batch_size:
            try:
                await self._set_batch(state.replicas, want.batch_size, have.batch_size)
            except BaseException:
                await stop_replicas(new, self.timeouts.grace_s)
                raise
        kept = [*state.replicas, *new][: want.replicas]
        await self._retire(stage, state, [r for r in state.replicas if r not in kept], kept)

    async def _set_batch(self, replicas: Sequence[Replica], value: int, previous: int) -> None:
        """``POST /config`` to each replica; on a failure the ones already changed are set back."""
        done: list[Replica] = []
        for replica in replicas:
            problem = await self._post_config(replica, value)
            if problem:
                for back in done:
                    await self._post_config(back, previous)
                raise ChangeError(500, f"cannot set batch size {value} on {replica.url}: {problem}")
            done.append(replica)

    async def _post_config(self, replica: Replica, value: int) -> str:
        try:
            async with self.session.post(
                replica.url + "/config", json={"batch_size": value}, timeout=aiohttp.ClientTimeout(total=10)
            ) as answer:
                return "" if answer.status == 200 else f"HTTP {answer.status}: {(await answer.text())[:200]}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"

    async def _retire(
        self, stage: str, state: StageState, leaving: Sequence[Replica], kept: Sequence[Replica] | None = None
    ) -> None:
        """Take ``leaving`` out of the router (``kept`` in), drain, stop."""
        kept = [r for r in state.replicas if r not in leaving] if kept is None else list(kept)
        self.router.set_replicas(stage, [r.url for r in kept])
        state.replicas = kept
        await self._drain_and_stop(stage, leaving)

    async def _drain_and_stop(self, stage: str, leaving: Sequence[Replica]) -> None:
        if not leaving:
            return
        if not await self.router.wait_drained(stage, self.timeouts.drain_s):
            log.warning(
                "stage %s: replicas still busy after %g s; stopping them anyway", stage, self.timeouts.drain_s
            )
        await stop_replicas(leaving, self.timeouts.grace_s)

    def _forget_dead(self, stage: str, state: StageState) -> None:
        """Replicas that exited on their own leave the router and the stage's list (and are reaped)."""
        dead = [r for r in state.replicas if not r.alive()]
        if not dead:
            return
        for replica in dead:
            log.warning(
                "stage server %s of %s/%s (pid %d) exited with status %s; see %s",
                replica.url, self.spec.name, stage, replica.pid, replica.process.returncode, replica.log_path,
            )  # fmt: skip
        state.replicas = [r for r in state.replicas if r.alive()]
        self.router.set_replicas(stage, [r.url for r in state.replicas])

    def monitor_once(self) -> None:
        for stage, state in self.stages.items():
            if not state.lock.locked():
                self._forget_dead(stage, state)


async def _false() -> bool:
    return False


# --- the admin API -----------------------------------------------------------------------------------------


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def stage_config_of(body: Any) -> StageConfig:
    """The PUT body as a StageConfig; ValueError when it is not one."""
    keys = ("variant", "batch_size", "cores", "replicas")
    if not isinstance(body, dict) or set(body) != set(keys):
        raise ValueError(f"expected a JSON object with exactly {', '.join(keys)}")
    for key in keys[1:]:
        if isinstance(body[key], bool) or not isinstance(body[key], int):
            raise ValueError(f"{key} must be an integer, got {body[key]!r}")
    if not isinstance(body["variant"], str):
        raise ValueError(f"variant must be a string, got {body['variant']!r}")
    return StageConfig.from_dict(body)


class Admin:
    def __init__(self, pipelines: Mapping[str, PipelineRuntime]) -> None:
        self.pipelines = dict(pipelines)

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/pipelines/{pipeline}", self.get_pipeline),
                web.put("/pipelines/{pipeline}/stages/{stage}", self.put_stage),
                web.delete("/pipelines/{pipeline}/stages/{stage}", self.delete_stage),
            ]
        )
        return app

    def _pipeline(self, request: web.Request) -> PipelineRuntime:
        name = request.match_info["pipeline"]
        if name not in self.pipelines:
            served = ", ".join(sorted(self.pipelines)) or "none"
            raise ChangeError(404, f"the runtime does not serve pipeline {name!r} (it serves: {served})")
        return self.pipelines[name]

    async def healthz(self, _: web.Request) -> web.Response:
        routers = {name: p.router_url for name, p in self.pipelines.items()}
        return web.json_response({"ok": True, "pid": os.getpid(), "routers": routers})

    async def get_pipeline(self, request: web.Request) -> web.Response:
        try:
            pipeline = self._pipeline(request)
        except ChangeError as exc:
            return _error(exc.status, exc.message)
        return web.json_response(await pipeline.describe())

    async def put_stage(self, request: web.Request) -> web.Response:
        try:
            pipeline = self._pipeline(request)
            try:
                want = stage_config_of(await request.json())
            except ValueError as exc:
                raise ChangeError(400, f"bad request body: {exc}") from None
            await pipeline.put(request.match_info["stage"], want)
        except ChangeError as exc:
            return _error(exc.status, exc.message)
        except Exception as exc:  # the change failed; what runs is what the answer to a GET says
            log.exception("changing %s failed", request.path)
            return _error(500, f"the change failed: {type(exc).__name__}: {exc}")
        return web.json_response(await pipeline.describe())

    async def delete_stage(self, request: web.Request) -> web.Response:
        try:
            pipeline = self._pipeline(request)
            await pipeline.delete(request.match_info["stage"])
        except ChangeError as exc:
            return _error(exc.status, exc.message)
        return web.json_response(await pipeline.describe())


# --- running -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeSettings:
    specs: tuple[Path, ...]
    port: int
    router_port_base: int
    home: Path
    timeouts: Timeouts


def _router_port(base: int, index: int) -> int:
    return 0 if base == 0 else base + index


def already_running(path: Path) -> str:
    """The URL of a live runtime that wrote ``path``, or ""."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return str(info.get("url", ""))


async def run(settings: RuntimeSettings) -> int:
    path = runtime_file(settings.home)
    running = already_running(path)
    if running:
        log.error("a runtime already serves at %s (%s); stop it first", running, path)
        return 1
    pipelines = _load_pipelines(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            for index, pipeline in enumerate(pipelines.values()):
                port = _router_port(settings.router_port_base, index)
                pipeline.router_url = await stack.enter_async_context(
                    serve_app(create_app(pipeline.router), HOST, port)
                )
            admin_url = await stack.enter_async_context(
                serve_app(Admin(pipelines).app(), HOST, settings.port)
            )
            _write_runtime_file(path, admin_url, pipelines)
            log.info(
                "admin API at %s; routers: %s", admin_url, {p: r.router_url for p, r in pipelines.items()}
            )
            monitor = asyncio.create_task(_monitor(pipelines))
            await stop.wait()
            log.info("stopping: routers, then every stage server")
            monitor.cancel()
        # The routers and the admin API are closed here; the stage servers go next.
    finally:
        await asyncio.gather(*(p.close() for p in pipelines.values()))
        if _written_by_me(path):
            path.unlink(missing_ok=True)
    log.info("stopped")
    return 0


def _written_by_me(path: Path) -> bool:
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["pid"]) == os.getpid()
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _load_pipelines(settings: RuntimeSettings) -> dict[str, PipelineRuntime]:
    pipelines: dict[str, PipelineRuntime] = {}
    for spec_path in settings.specs:
        spec = load_spec(spec_path)
        if spec.name in pipelines:
            raise SpecError(f"pipeline {spec.name!r} is given twice")
        pipelines[spec.name] = PipelineRuntime(spec, spec_path, settings.home, settings.timeouts)
    return pipelines


def _write_runtime_file(path: Path, admin_url: str, pipelines: Mapping[str, PipelineRuntime]) -> None:
    info = {
        "url": admin_url,
        "pid": os.getpid(),
        "pipelines": {name: {"router": p.router_url} for name, p in pipelines.items()},
    }
    atomic_write_text(path, json.dumps(info, indent=2, sort_keys=True) + "\n")


async def _monitor(pipelines: Mapping[str, PipelineRuntime]) -> None:
    while True:
        await asyncio.sleep(MONITOR_S)
        for pipeline in pipelines.values():
            pipeline.monitor_once()


# --- command line ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Serve pipelines on this machine: a router per pipeline and stage-server processes, "
        "changed through an admin API (GET /pipelines/<p>, PUT and DELETE /pipelines/<p>/stages/<stage>).",
    )
    parser.add_argument(
        "--spec",
        action="append",
        required=True,
        help="a pipeline spec file or a shipped pipeline's name (repeat)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"admin API port on {HOST} (default {DEFAULT_PORT}; 0: any)",
    )
    parser.add_argument(
        "--router-port-base",
        type=int,
        default=DEFAULT_ROUTER_PORT_BASE,
        help=f"the i-th pipeline's router listens on this + i (default {DEFAULT_ROUTER_PORT_BASE}; 0: any)",
    )
    parser.add_argument("--home", type=Path, help="IPA_HOME (default: $IPA_HOME or ~/.ipa)")
    parser.add_argument("--ready-timeout-s", type=float, default=READY_TIMEOUT_S, help="for a new replica")
    parser.add_argument(
        "--drain-timeout-s", type=float, default=DRAIN_TIMEOUT_S, help="for a replica going away"
    )
    parser.add_argument("--stop-grace-s", type=float, default=STOP_GRACE_S, help="from SIGTERM to SIGKILL")
    return parser


def settings_from_args(args: argparse.Namespace) -> RuntimeSettings:
    if args.home is None:
        from ipa_tasks.settings import current_settings

        home = current_settings().home
    else:
        home = args.home.expanduser().resolve()
    return RuntimeSettings(
        specs=tuple(resolve_spec_path(s).resolve() for s in args.spec),
        port=args.port,
        router_port_base=args.router_port_base,
        home=home,
        timeouts=Timeouts(args.ready_timeout_s, args.drain_timeout_s, args.stop_grace_s),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s runtime [%(process)d]: %(message)s")
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    try:
        settings = settings_from_args(args)
        return asyncio.run(run(settings))
    except SpecError as exc:
        print(f"runtime: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a port is taken, say
        print(f"runtime: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
