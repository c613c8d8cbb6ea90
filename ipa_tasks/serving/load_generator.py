"""Replays a load onto the local router and records how every request was served.

What: for each second ``k`` of a workload (a window of the Twitter trace, damped by 8 and scaled, or a
constant rate), ``workload[k]`` requests are sent to the router's ``POST /pipeline`` at random offsets
inside that second; each request's send time, latency, outcome (``ok``, ``dropped`` with the router's
reason, or ``error``) and what served it (the variants and batch sizes of the router's answer) are
recorded, written to CSV or Parquet, and summarised (p50/p99 latency, SLA violations).

Why: it is the load the adaptation loop adapts to, as IPA's ``barazmoon`` tester was
(``reference/ipa.md`` section 6), and the record is what an experiment is judged by.

Arrivals (IPA's ``exponential`` mode): the gaps between the ``n`` arrivals of a second are exponential,
normalised so that all ``n`` fall inside the second -- ``n + 1`` exponential gaps, cumulated and divided
by their total. That is exactly a Poisson process conditioned on ``n`` arrivals in the second, so every
second sends its count, no more, no less. IPA drew each offset independently as Exponential(1/n), which
crowds a second's requests into its beginning and lets a few spill past it; this keeps the Poisson
spacing without either. Seeded, so a replay is repeatable.

Bounds (a workplace rule): only a router on this machine (host ``localhost`` or in 127.0.0.0/8; anything
else is refused before a request is sent), at most ``--max-requests`` requests and ``MAX_SECONDS``
seconds, at most ``--concurrency`` requests in flight (a request waits for a slot and is sent late, and
the record says how late), and nothing after ``seconds + timeout_s``: a request still waiting for a slot
then is recorded as an error, not sent.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import numpy as np

MAX_SECONDS = 6 * 3600
DEFAULT_MAX_REQUESTS = 200_000
# Short UI strings: what the language-routing demo pipeline reads, and what any echoing stage can carry.
BUILTIN_INPUTS: tuple[Any, ...] = ("Save changes", "Enregistrer les modifications", "Änderungen speichern")
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

Inputs = Callable[[int], Any]


class LoadGeneratorError(ValueError):
    """The load cannot be generated as asked; the message says why."""


# --- where requests may go ---------------------------------------------------------------------------------


def pipeline_endpoint(url: str) -> str:
    """The ``/pipeline`` URL of the router at ``url`` (a base URL, or the endpoint itself).

    Refuses, with LoadGeneratorError, any URL whose host is not ``localhost`` or in 127.0.0.0/8."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadGeneratorError(f"the router URL must be http://HOST:PORT, not {url!r}")
    if not _is_loopback(parts.hostname):
        raise LoadGeneratorError(
            f"refusing to send load to {parts.hostname!r}: the load generator only targets a router on this "
            "machine (localhost or 127.0.0.0/8)"
        )
    path = parts.path.rstrip("/") or "/pipeline"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host) in _LOOPBACK
    except ValueError:
        return False  # a name other than localhost could resolve anywhere


# --- what to send, and when --------------------------------------------------------------------------------


def scaled_counts(rates: Sequence[float] | np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Whole requests per second for ``rates * scale``, rounded so the running total stays within half a
    request of the exact one (plain rounding of 0.4 rps would send nothing at all)."""
    if scale < 0:
        raise LoadGeneratorError(f"the scale must not be negative, got {scale}")
    values = np.asarray(rates, dtype=float) * scale
    if values.size and (not np.isfinite(values).all() or (values < 0).any()):
        raise LoadGeneratorError("rates must be finite and non-negative")
    totals = np.floor(np.cumsum(values) + 0.5)
    return np.diff(totals, prepend=0.0).astype(int)


def constant_workload(rps: float, seconds: int) -> np.ndarray:
    return scaled_counts(np.full(seconds, float(rps)))


def trace_workload(
    path: Path, start: int, seconds: int, *, scale: float = 1.0, damping: int = 8
) -> np.ndarray:
    """Seconds ``start`` to ``start + seconds`` of the trace, damped as IPA did, times ``scale``."""
    from ipa_tasks.forecasting.trace import load_trace

    trace = load_trace(path, damping)
    if start < 0 or start + seconds > len(trace):
        raise LoadGeneratorError(
            f"the window {start}..{start + seconds} s is outside the trace (0..{len(trace)})"
        )
    return scaled_counts(trace[start : start + seconds], scale)


def second_offsets(count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` sorted offsets in (0, 1) with exponential gaps between them (see the module docstring)."""
    if count <= 0:
        return np.empty(0)
    gaps = rng.exponential(1.0, count + 1)
    cumulative = np.cumsum(gaps)
    return cumulative[:-1] / cumulative[-1]


def arrival_schedule(workload: Sequence[int] | np.ndarray, seed: int = 0) -> np.ndarray:
    """Send times in seconds from the start of the replay: ``workload[k]`` of them inside ``[k, k+1)``."""
    rng = np.random.default_rng(seed)
    parts = [k + second_offsets(int(n), rng) for k, n in enumerate(workload)]
    return np.concatenate(parts) if parts else np.empty(0)


def cycle_inputs(values: Sequence[Any]) -> Inputs:
    """Request ``i`` gets ``values[i % len(values)]``."""
    if not values:
        raise LoadGeneratorError("give at least one input")
    items = list(values)
    return lambda index: items[index % len(items)]


# --- records ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One request: when it was meant to go and went, how long it took, how it ended, what served it.

    ``scheduled_s``/``sent_s`` count from the start of the replay; ``latency_s`` is from sending to the
    answer (or the failure); ``reason`` is the router's drop reason or the error; ``variants`` and
    ``batch_sizes`` are JSON objects keyed by stage, from the router's answer."""

    index: int
    second: int
    scheduled_s: float
    sent_s: float | None
    sent_at: float | None
    latency_s: float | None
    outcome: str
    reason: str
    http_status: int | None
    router_latency_s: float | None
    variants: str
    batch_sizes: str


@dataclass(frozen=True)
class Summary:
    """``p50``/``p99`` are over the requests served (``ok``); an SLA violation is a request that was
    dropped, failed, or was served later than ``sla_s``."""

    count: int
    ok: int
    dropped: int
    errors: int
    p50_latency_s: float | None
    p99_latency_s: float | None
    sla_s: float | None
    late: int
    sla_violations: int
    max_send_delay_s: float | None
    drop_reasons: dict[str, int]


def summarize(records: Sequence[RequestRecord], sla_s: float | None = None) -> Summary:
    served = [r.latency_s for r in records if r.outcome == "ok" and r.latency_s is not None]
    late = sum(1 for latency in served if sla_s is not None and latency > sla_s)
    dropped = [r for r in records if r.outcome == "dropped"]
    failed = sum(1 for r in records if r.outcome == "error")
    reasons: dict[str, int] = {}
    for record in dropped:
        reasons[record.reason] = reasons.get(record.reason, 0) + 1
    delays = [r.sent_s - r.scheduled_s for r in records if r.sent_s is not None]
    return Summary(
        count=len(records),
        ok=len(served),
        dropped=len(dropped),
        errors=failed,
        p50_latency_s=float(np.percentile(served, 50)) if served else None,
        p99_latency_s=float(np.percentile(served, 99)) if served else None,
        sla_s=sla_s,
        late=late,
        sla_violations=late + len(dropped) + failed,
        max_send_delay_s=max(delays) if delays else None,
        drop_reasons=reasons,
    )


def write_records(records: Sequence[RequestRecord], path: Path) -> None:
    """CSV, or Parquet for a ``.parquet`` path."""
    import pandas as pd

    frame = pd.DataFrame([asdict(r) for r in records], columns=[f.name for f in fields(RequestRecord)])
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def _served_by(answer: dict[str, Any]) -> tuple[str, str]:
    stages = answer.get("stages") if isinstance(answer.get("stages"), list) else []
    variants = {s.get("stage"): s.get("variant") for s in stages if isinstance(s, dict)}
    batches = {s.get("stage"): s.get("batch_size") for s in stages if isinstance(s, dict)}
    return json.dumps(variants), json.dumps(batches)


# --- the replay -------------------------------------------------------------------------------------------


class Progress:
    """What the replay reports as it goes; the default reports nothing."""

    def start(self, seconds: int, requests: int) -> None: ...

    def update(self, seconds_done: float, sent: int) -> None: ...

    def stop(self) -> None: ...


class RichProgress(Progress):
    """A rich progress bar of the seconds replayed."""

    def start(self, seconds: int, requests: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("replaying"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("s  {task.fields[sent]}/" + str(requests) + " sent"),
            TimeElapsedColumn(),
        )
        self._task = self._bar.add_task("replay", total=seconds, sent=0)
        self._bar.start()

    def update(self, seconds_done: float, sent: int) -> None:
        self._bar.update(self._task, completed=int(seconds_done), sent=sent)

    def stop(self) -> None:
        self._bar.stop()


@dataclass(frozen=True)
class _Planned:
    """A request of the schedule: its number, its second of the workload, when it is due."""

    index: int
    second: int
    scheduled_s: float


@dataclass
class _Replay:
    endpoint: str
    inputs: Inputs
    timeout_s: float
    start: float
    deadline: float
    session: aiohttp.ClientSession
    sent: int = 0

    def clock(self) -> float:
        return time.monotonic() - self.start

    async def send(self, planned: _Planned) -> RequestRecord:
        sent_s, sent_at = self.clock(), time.time()
        self.sent += 1
        budget = max(min(self.timeout_s, self.deadline - sent_s), 0.001)
        status, answer, error = await self._post(self.inputs(planned.index), budget)
        return RequestRecord(
            index=planned.index,
            second=planned.second,
            scheduled_s=planned.scheduled_s,
            sent_s=sent_s,
            sent_at=sent_at,
            latency_s=self.clock() - sent_s,
            http_status=status,
            **_outcome(answer, error),
        )

    async def _post(self, item: Any, budget: float) -> tuple[int | None, Any, str]:
        """(HTTP status, the router's JSON answer, an error message or "")."""
        status: int | None = None
        try:
            timeout = aiohttp.ClientTimeout(total=budget)
            # No redirects: a redirect could lead off this machine.
            post = self.session.post(
                self.endpoint, json={"input": item}, timeout=timeout, allow_redirects=False
            )
            async with post as answer:
                status = answer.status
                if status != 200:
                    return status, None, f"HTTP {status}: {(await answer.text())[:200]}"
                return status, await answer.json(content_type=None), ""
        except TimeoutError:
            return status, None, f"timeout after {budget:.3g} s"
        except (aiohttp.ClientError, ValueError) as exc:
            return status, None, f"{type(exc).__name__}: {exc}"


def _outcome(answer: Any, error: str) -> dict[str, Any]:
    """The record's fields that come from the router's answer."""
    if not error and not isinstance(answer, dict):
        error = "the router's answer is not a JSON object"
    if error:
        return {
            "outcome": "error",
            "reason": error,
            "router_latency_s": None,
            "variants": "{}",
            "batch_sizes": "{}",
        }
    dropped = bool(answer.get("dropped"))
    variants, batch_sizes = _served_by(answer)
    return {
        "outcome": "dropped" if dropped else "ok",
        "reason": str(answer.get("reason") or "") if dropped else "",
        "router_latency_s": answer.get("latency_s"),
        "variants": variants,
        "batch_sizes": batch_sizes,
    }


def _not_sent(planned: _Planned) -> RequestRecord:
    return RequestRecord(
        index=planned.index,
        second=planned.second,
        scheduled_s=planned.scheduled_s,
        sent_s=None,
        sent_at=None,
        latency_s=None,
        http_status=None,
        **_outcome(None, "not sent: no free concurrency slot before the replay's deadline"),
    )


async def replay(
    url: str,
    workload: Sequence[int] | np.ndarray,
    inputs: Inputs,
    *,
    seed: int = 0,
    concurrency: int = 64,
    timeout_s: float = 30.0,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    progress: Progress | None = None,
) -> list[RequestRecord]:
    """Send ``workload`` to the router at ``url`` and record every request, ordered by send time."""
    endpoint = pipeline_endpoint(url)
    plan = _plan(workload, seed, max_requests)
    if concurrency < 1 or timeout_s <= 0:
        raise LoadGeneratorError("concurrency must be at least 1 and timeout_s positive")
    progress = progress or Progress()
    progress.start(len(workload), len(plan))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        run = _Replay(endpoint, inputs, timeout_s, time.monotonic(), len(workload) + timeout_s, session)
        ticker = asyncio.create_task(_tick(run, progress, len(workload)))
        try:
            records = await _dispatch(run, plan, concurrency)
        finally:
            ticker.cancel()
            progress.update(len(workload), run.sent)
            progress.stop()
    return records


def _plan(workload: Sequence[int] | np.ndarray, seed: int, max_requests: int) -> list[_Planned]:
    counts = np.asarray(workload, dtype=int)
    if len(counts) > MAX_SECONDS:
        raise LoadGeneratorError(f"{len(counts)} s is longer than the limit of {MAX_SECONDS} s")
    if (counts < 0).any():
        raise LoadGeneratorError("a second cannot have a negative number of requests")
    if counts.sum() > max_requests:
        raise LoadGeneratorError(
            f"the workload has {int(counts.sum())} requests, more than the limit of {max_requests} "
            "(raise --max-requests if that is meant)"
        )
    times = arrival_schedule(counts, seed).tolist()
    seconds = np.repeat(np.arange(len(counts)), counts).tolist()
    return [_Planned(i, second, t) for i, (second, t) in enumerate(zip(seconds, times, strict=True))]


async def _dispatch(run: _Replay, plan: list[_Planned], concurrency: int) -> list[RequestRecord]:
    """Send each request at its time (or as soon as a slot frees); the rest, past the deadline, unsent."""
    slots = asyncio.Semaphore(concurrency)
    tasks: list[asyncio.Task[RequestRecord]] = []
    for position, planned in enumerate(plan):
        await asyncio.sleep(max(0.0, planned.scheduled_s - run.clock()))
        try:
            await asyncio.wait_for(slots.acquire(), timeout=max(run.deadline - run.clock(), 0.0))
        except TimeoutError:
            return [*await asyncio.gather(*tasks), *map(_not_sent, plan[position:])]
        task = asyncio.create_task(run.send(planned))
        task.add_done_callback(lambda _: slots.release())
        tasks.append(task)
    return list(await asyncio.gather(*tasks))


async def _tick(run: _Replay, progress: Progress, seconds: int) -> None:
    while True:
        progress.update(min(run.clock(), seconds), run.sent)
        await asyncio.sleep(0.25)


# --- command line ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ipa_tasks.serving.load_generator",
        description="Replay a window of the Twitter trace (or a constant rate) onto the local router and "
        "record every request. Only a router on this machine (localhost, 127.0.0.0/8) is accepted.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the router (base URL or /pipeline)")
    parser.add_argument("--trace", type=Path, help="the trace file (default: the shared Twitter trace)")
    parser.add_argument("--start", type=int, default=1_301_160, help="first second of the trace window")
    parser.add_argument("--seconds", type=int, default=60, help=f"seconds to replay (at most {MAX_SECONDS})")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the damped trace")
    parser.add_argument("--damping", type=int, default=8, help="the trace is divided by this, as IPA did")
    parser.add_argument("--rps", type=float, help="a constant rate instead of the trace")
    parser.add_argument("--inputs", type=Path, help="a JSON list of inputs, sent in turn (default: built-in)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight at most")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="per request")
    parser.add_argument("--max-requests", type=int, default=DEFAULT_MAX_REQUESTS)
    parser.add_argument("--sla-s", type=float, help="count requests served later than this as violations")
    parser.add_argument("--out", type=Path, help="write every request's record here (.csv or .parquet)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def _workload(args: argparse.Namespace) -> np.ndarray:
    if not 0 < args.seconds <= MAX_SECONDS:
        raise LoadGeneratorError(f"--seconds must be between 1 and {MAX_SECONDS}")
    if args.rps is not None:
        return constant_workload(args.rps, args.seconds)
    from ipa_tasks.forecasting.trace_location import default_trace_path

    path = args.trace or default_trace_path()
    return trace_workload(path, args.start, args.seconds, scale=args.scale, damping=args.damping)


def _inputs(path: Path | None) -> Inputs:
    if path is None:
        return cycle_inputs(BUILTIN_INPUTS)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LoadGeneratorError(f"{path}: cannot read the inputs: {exc}") from None
    if not isinstance(values, list):
        raise LoadGeneratorError(f"{path}: expected a JSON list of inputs")
    return cycle_inputs(values)


def print_summary(summary: Summary, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(summary), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "requests", "ok", "dropped", "errors", "p50 s", "p99 s", "SLA violations", "max send delay s"
    )
    shown = [summary.p50_latency_s, summary.p99_latency_s, summary.max_send_delay_s]
    p50, p99, delay = (f"{v:.3f}" if v is not None else "-" for v in shown)
    sla = (
        f"{summary.sla_violations} (SLA {summary.sla_s:g} s)"
        if summary.sla_s
        else str(summary.sla_violations)
    )
    table.add_row(
        str(summary.count), str(summary.ok), str(summary.dropped), str(summary.errors), p50, p99, sla, delay
    )
    console = Console()
    console.print(table)
    if summary.drop_reasons:
        console.print("drops: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.drop_reasons.items())))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        pipeline_endpoint(args.url)  # refuse a non-local router before reading anything
        workload, inputs = _workload(args), _inputs(args.inputs)
        progress = Progress() if args.no_progress else RichProgress()
        records = asyncio.run(
            replay(
                args.url,
                workload,
                inputs,
                seed=args.seed,
                concurrency=args.concurrency,
                timeout_s=args.timeout_s,
                max_requests=args.max_requests,
                progress=progress,
            )
        )
    except ValueError as exc:  # LoadGeneratorError, and the trace's TraceError
        print(f"load_generator: error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        write_records(records, args.out)
    print_summary(summarize(records, args.sla_s), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
