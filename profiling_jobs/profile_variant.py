"""The profiling job: measure one model variant and write its rows of the profile table.

For every core count the job pins the thread pools of the process, and for every batch size it runs
``--warmup`` untimed batches, then ``--repetitions`` timed ones, built by cycling through the variant's
held-out inputs. Each (batch size, cores) pair becomes one row of :mod:`ipa_tasks.profiles`: batch latency
p50/p95/p99, throughput, peak memory and the accuracy on the whole held-out set (measured once).

Run it as ``python -m profiling_jobs.profile_variant --spec FILE --stage S --variant V --out rows.csv``.
Only variants of model kind ``python`` can be profiled (see :mod:`ipa_tasks.variants`).
"""

from __future__ import annotations

import argparse
import gc
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ipa_tasks.argument_types import int_at_least
from ipa_tasks.profiles import ProfileError, write_profile
from ipa_tasks.spec import SpecError, load_spec, resolve_spec_path
from ipa_tasks.variants import LoadedVariant, VariantLoadError, accuracy, load_variant

EXIT_BAD_INPUT = 2


class BadInput(ValueError):
    """The job was asked for something it cannot do; reported as one line and exit status 2."""


def latency_percentiles(samples: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95 and p99 of batch latencies, with numpy's default (linear) interpolation."""
    if len(samples) == 0:
        raise ValueError("no latency samples")
    p50, p95, p99 = np.percentile(np.asarray(samples, dtype=float), [50, 95, 99])
    return float(p50), float(p95), float(p99)


def throughput_rps(batch_size: int, samples: Sequence[float]) -> float:
    """Requests per second one replica sustains: a batch every median latency, back to back.

    The median, not the mean: on a shared machine a few preempted batches drag the mean far from what the
    replica does, and fitted and synthetic rows (and the profile check) use ``batch / p50`` too.
    """
    if len(samples) == 0:
        raise ValueError("no latency samples")
    return batch_size / float(np.median(samples))


def batches(items: Sequence[Any], batch_size: int, count: int) -> list[list[Any]]:
    """``count`` batches of ``batch_size`` items, cycling through ``items`` from where the last one stopped.

    Cycling, rather than restarting each batch at item 0, spreads the timed batches over the whole held-out
    set, so one unusually cheap or costly input does not dominate the timings.
    """
    if len(items) == 0:
        raise ValueError("no items to build batches from")
    if batch_size < 1 or count < 0:
        raise ValueError(f"batch size must be >= 1 and count >= 0, got {batch_size} and {count}")
    n = len(items)
    return [[items[(b * batch_size + i) % n] for i in range(batch_size)] for b in range(count)]


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory() -> bool:
    """Start a new peak-memory window (Linux: writing 5 to ``clear_refs`` resets ``VmHWM``), so each
    (batch size, cores) point reports its own peak rather than the largest batch's so far. False where the
    kernel does not offer it; the peak is then the process's since it started."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_memory_mib() -> float:
    """Peak resident memory of this process since the last :func:`reset_peak_memory` (or its start).

    It is the whole replica's footprint, interpreter and libraries included: what a replica running this
    variant needs, which is what a memory request must cover.
    """
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux but bytes on macOS.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@contextmanager
def pinned_threads(cores: int) -> Iterator[None]:
    """Limit the intra-op threads of BLAS/OpenMP pools (and torch, if the variant loaded it) to ``cores``.

    ``OMP_NUM_THREADS`` and friends are read when a library loads, which has happened by now, so the pools
    are limited at run time instead.
    """
    torch = sys.modules.get("torch")
    previous = torch.get_num_threads() if torch is not None else None
    try:
        with threadpool_limits(limits=cores):
            if torch is not None:
                torch.set_num_threads(cores)
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(previous)


def time_batches(predict: Callable[[Sequence[Any]], Any], runs: Sequence[Sequence[Any]]) -> list[float]:
    """Wall-clock seconds of ``predict`` on each batch.

    The garbage collector is paused meanwhile, as ``timeit`` does: a collection triggered by the job's own
    allocations would land in a random batch and inflate the tail percentiles by far more than the model.
    """
    samples = []
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for batch in runs:
            start = time.perf_counter()
            predict(batch)
            samples.append(time.perf_counter() - start)
    finally:
        if was_enabled:
            gc.enable()
    return samples


def profile_rows(
    variant: LoadedVariant,
    *,
    pipeline: str,
    stage: str,
    variant_name: str,
    batch_sizes: Sequence[int],
    cores: Sequence[int],
    repetitions: int,
    warmup: int,
    log: Callable[[str], None],
) -> pd.DataFrame:
    """Measure ``variant`` at every (batch size, cores) pair; one row each in the profile format."""
    inputs, labels = variant.held_out()
    held_out_accuracy = accuracy(variant, inputs, labels)
    host = platform.node()
    rows = []
    for n_cores in cores:
        with pinned_threads(n_cores):
            for batch_size in batch_sizes:
                # Warm-up and timed batches run back to back: the first batches after a pause run on
                # cold caches and would be slow again if anything (even gc.collect) came in between.
                runs = batches(inputs, batch_size, warmup + repetitions)
                reset_peak_memory()
                samples = time_batches(variant.predict, runs)
                samples = samples[warmup:]
                p50, p95, p99 = latency_percentiles(samples)
                rps = throughput_rps(batch_size, samples)
                log(
                    f"{pipeline}/{stage}/{variant_name} cores={n_cores} batch={batch_size}: "
                    f"p50 {p50 * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms, {rps:.1f} req/s"
                )
                rows.append(
                    {
                        "pipeline": pipeline,
                        "stage": stage,
                        "variant": variant_name,
                        "batch_size": batch_size,
                        "cores": n_cores,
                        "latency_p50_s": p50,
                        "latency_p95_s": p95,
                        "latency_p99_s": p99,
                        "throughput_rps": rps,
                        "memory_mb": peak_memory_mib(),
                        "accuracy": held_out_accuracy,
                        "repetitions": repetitions,
                        "source": "measured",
                        "profiled_at": datetime.now(UTC).isoformat(timespec="seconds"),
                        "host": host,
                    }
                )
    return pd.DataFrame(rows)


_positive_int = int_at_least(1)


def _positive_int_list(text: str) -> list[int]:
    values = [_positive_int(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated list like 1,2,4")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"values must be unique, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m profiling_jobs.profile_variant",
        description="Profile one model variant (latency p50/p95/p99, throughput, peak memory, held-out "
        "accuracy) per batch size and core count, and write the rows in the profile format.",
    )
    parser.add_argument("--spec", required=True, help="pipeline spec YAML, or the name of a shipped one")
    parser.add_argument("--stage", required=True, help="stage of the spec the variant belongs to")
    parser.add_argument("--variant", required=True, help="variant name within the stage")
    parser.add_argument(
        "--batch-sizes", type=_positive_int_list, help="comma-separated batch sizes (default: the stage's)"
    )
    parser.add_argument(
        "--cores", type=_positive_int_list, help="comma-separated thread counts (default: the stage's)"
    )
    parser.add_argument("--repetitions", type=_positive_int, default=30, help="timed batches (default 30)")
    parser.add_argument("--warmup", type=int_at_least(0), default=5, help="untimed batches (default 5)")
    parser.add_argument("--out", required=True, type=Path, help="output table, .csv or .parquet")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.out.suffix not in {".csv", ".parquet"}:
            raise BadInput(f"--out {args.out}: use a .csv or .parquet file")
        spec = load_spec(resolve_spec_path(args.spec))
        stage = spec.stage(args.stage)
        variant_spec = stage.variant(args.variant)
        variant = load_variant(variant_spec.model)
    except (BadInput, SpecError, VariantLoadError, NotImplementedError) as exc:
        return _bad_input(str(exc))
    except KeyError as exc:
        # KeyError's str() quotes its message; the message itself is what the user needs.
        return _bad_input(str(exc.args[0]))
    table = profile_rows(
        variant,
        pipeline=spec.name,
        stage=stage.name,
        variant_name=variant_spec.name,
        batch_sizes=args.batch_sizes or stage.batch_sizes,
        cores=args.cores or stage.cores,
        repetitions=args.repetitions,
        warmup=args.warmup,
        log=_progress,
    )
    try:
        path = write_profile(table, args.out)
    except ProfileError as exc:
        return _bad_input(str(exc))
    _progress(f"wrote {len(table)} rows to {path}")
    return 0


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _bad_input(message: str) -> int:
    print(f"profile_variant: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
