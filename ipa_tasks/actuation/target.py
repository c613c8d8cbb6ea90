"""The interface of a target (where a pipeline runs) and the one procedure that applies a change to any
target: the steps in order, a rollback of the steps already done when one fails, and a read-back.

A target only knows how to read what runs, carry out one :class:`~.config.Step` and say whether the stages
are ready; everything about order, failure and reporting is here, so the Kubernetes and the local target
behave the same way when something breaks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ipa_tasks.actuation.config import (
    PipelineConfig,
    StageConfig,
    Step,
    config_from_dict,
    config_to_dict,
    plan_steps,
)
from ipa_tasks.spec import PipelineSpec

Log = Callable[[str], object]
ApplyStatus = Literal["unchanged", "dry_run", "applied", "rolled_back", "inconsistent"]


class TargetError(RuntimeError):
    """A target could not read or change what runs (after its own retries); the message says what and why."""


class Target(Protocol):
    name: str
    """Plain words for logs, e.g. ``kubernetes namespace ipa`` or ``local file /path``."""

    def read(self, spec: PipelineSpec) -> PipelineConfig:
        """What every deployed stage of ``spec`` runs now (stages that are not deployed are absent)."""
        ...

    def apply_step(self, spec: PipelineSpec, step: Step) -> None:
        """Make ``step.stage`` run ``step.after``. Raises :class:`TargetError`."""
        ...

    def remove(self, spec: PipelineSpec, stage: str) -> None:
        """Stop a stage this loop started (the undo of a ``create`` step). Raises :class:`TargetError`."""
        ...

    def not_ready(self, spec: PipelineSpec, config: Mapping[str, StageConfig]) -> list[str]:
        """Why the stages are not yet serving ``config`` (one line per stage); empty when all are ready."""
        ...


@dataclass(frozen=True)
class ApplyReport:
    status: ApplyStatus
    steps: tuple[Step, ...]
    """Every step the change needed, in order."""
    done: tuple[Step, ...] = ()
    """The steps that were carried out (before any rollback)."""
    running: PipelineConfig | None = None
    """What runs afterwards, read back from the target (None if it could not be read)."""
    error: str = ""
    not_ready: tuple[str, ...] = ()
    """Stages that had not become ready when the wait ended."""
    duration_s: float = 0.0
    message: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return self.status == "applied"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "steps": [s.to_dict() for s in self.steps],
            "done": [s.to_dict() for s in self.done],
            "running": None if self.running is None else config_to_dict(self.running),
            "error": self.error,
            "not_ready": list(self.not_ready),
            "duration_s": self.duration_s,
            "message": self.message,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApplyReport:
        running = data.get("running")
        return cls(
            status=data["status"],
            steps=tuple(Step.from_dict(s) for s in data.get("steps", ())),
            done=tuple(Step.from_dict(s) for s in data.get("done", ())),
            running=None if running is None else config_from_dict(running),
            error=str(data.get("error", "")),
            not_ready=tuple(data.get("not_ready", ())),
            duration_s=float(data.get("duration_s", 0.0)),
            message=str(data.get("message", "")),
            notes=tuple(data.get("notes", ())),
        )


def apply_change(
    target: Target,
    spec: PipelineSpec,
    current: Mapping[str, StageConfig],
    desired: Mapping[str, StageConfig],
    *,
    dry_run: bool = False,
    ready_timeout_s: float = 60.0,
    poll_s: float = 0.5,
    log: Log = print,
) -> ApplyReport:
    """Carry out the steps from ``current`` to ``desired`` on ``target``.

    * no step: ``unchanged``, nothing is written;
    * ``dry_run``: the steps are logged, nothing is written;
    * every step done and the read-back equals ``desired``: ``applied`` (then the stages get up to
      ``ready_timeout_s`` to become ready; those that do not are reported, the change stays);
    * a step fails (a :class:`TargetError`, or anything else a target raises): the failed step and the
      steps already done are undone, newest first, and the target is read back: ``rolled_back`` when it
      runs ``current`` again, else ``inconsistent``, with what runs (or that it could not be read) in the
      message. The failed step is undone too because a write can land after its call failed (a timeout);
      every write sets an absolute value, so undoing one that did not land changes nothing.
    """
    start = time.perf_counter()
    steps = tuple(plan_steps(current, desired))
    if not steps:
        return ApplyReport("unchanged", steps, running=dict(current), message="nothing to change")
    for step in steps:
        log(f"{'would apply' if dry_run else 'apply'}: {step.describe()}")
    if dry_run:
        return ApplyReport(
            "dry_run", steps, running=dict(current), message=f"dry run: {len(steps)} step(s) not applied"
        )
    done: list[Step] = []
    try:
        for step in steps:
            target.apply_step(spec, step)
            done.append(step)
    except Exception as exc:  # whatever broke, the steps done so far must not be left half-applied
        return _roll_back(target, spec, current, steps, done, _reason(exc), start, log)
    running, read_error = _read_back(target, spec)
    elapsed = time.perf_counter() - start
    if running is None or _differs(running, desired):
        what = read_error or f"it runs {_describe(running or {})}"
        message = f"every step was accepted, but reading back {target.name} disagrees with the plan: {what}"
        log(message)
        return ApplyReport(
            "inconsistent", steps, tuple(done), running, message, duration_s=elapsed, message=message
        )
    waiting = _wait_ready(target, spec, desired, ready_timeout_s, poll_s)
    elapsed = time.perf_counter() - start
    message = f"applied {len(steps)} step(s) in {elapsed:.2f} s"
    if waiting:
        message += f"; not ready after {ready_timeout_s:g} s: " + "; ".join(waiting)
    log(message)
    return ApplyReport(
        "applied", steps, tuple(done), running, not_ready=tuple(waiting), duration_s=elapsed, message=message
    )


def _roll_back(
    target: Target,
    spec: PipelineSpec,
    current: Mapping[str, StageConfig],
    steps: tuple[Step, ...],
    done: list[Step],
    error: str,
    start: float,
    log: Log,
) -> ApplyReport:
    failed = steps[len(done)]
    log(f"step failed: {failed.describe()}: {error}")
    # A create that failed has nothing to take back; any other failed step is undone like the done ones.
    undo = [*reversed(done)] if failed.before is None else [failed, *reversed(done)]
    undo_errors = []
    for step in undo:
        try:
            if step.before is None:
                target.remove(spec, step.stage)
            else:
                target.apply_step(spec, _undo(step, step.before))
            log(f"undone: {step.describe()}")
        except Exception as exc:  # keep undoing the others; the read-back says what runs
            undo_errors.append(f"{step.describe()}: {_reason(exc)}")
            log(f"could not undo {step.describe()}: {_reason(exc)}")
    running, read_error = _read_back(target, spec)
    elapsed = time.perf_counter() - start
    before = {stage: c for stage, c in current.items() if stage in {s.stage for s in steps}}
    notes = tuple(f"could not undo {problem}" for problem in undo_errors)
    if running is not None and not _differs(running, before):
        message = f"rolled back after '{failed.describe()}' failed ({error}); it runs what it ran before"
        status: ApplyStatus = "rolled_back"
    else:
        what = read_error or f"it runs {_describe(running or {})}"
        problems = "; ".join(undo_errors) or "the read-back differs from the previous configuration"
        message = (
            f"'{failed.describe()}' failed ({error}) and the rollback did not restore it ({problems}): {what}"
        )
        status = "inconsistent"
    log(message)
    return ApplyReport(
        status, steps, tuple(done), running, error, duration_s=elapsed, message=message, notes=notes
    )


def _reason(exc: Exception) -> str:
    """A target's own errors say what failed; anything else is named by its type as well."""
    return str(exc) if isinstance(exc, TargetError) else f"{type(exc).__name__}: {exc}"


def _undo(step: Step, before: StageConfig) -> Step:
    """The step back: a scale-out is undone by scaling in, a switch by switching back."""
    kind = {"scale_out": "scale_in", "scale_in": "scale_out"}.get(step.kind, step.kind)
    return Step(kind, step.stage, step.after, before)  # type: ignore[arg-type]


def _read_back(target: Target, spec: PipelineSpec) -> tuple[PipelineConfig | None, str]:
    try:
        return target.read(spec), ""
    except Exception as exc:  # a read-back that fails is reported as "unknown", never raised
        return None, f"cannot read {target.name} back: {_reason(exc)}"


def _differs(running: Mapping[str, StageConfig], wanted: Mapping[str, StageConfig]) -> bool:
    return any(running.get(stage) != config for stage, config in wanted.items())


def _describe(config: Mapping[str, StageConfig]) -> str:
    if not config:
        return "nothing"
    return "; ".join(f"{stage} {c.describe()}" for stage, c in config.items())


def _wait_ready(
    target: Target, spec: PipelineSpec, desired: Mapping[str, StageConfig], timeout_s: float, poll_s: float
) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            waiting = target.not_ready(spec, desired)
        except Exception as exc:  # the change is made; readiness is only reported
            waiting = [f"readiness unknown: {_reason(exc)}"]
        if not waiting or time.monotonic() >= deadline:
            return waiting
        time.sleep(poll_s)
