"""What one tick leaves for the next: the last load that was really observed, so that a tick whose source
is unreachable can plan for it (with a margin) instead of guessing, and when a trace replay started, so
that every tick replays the same clock."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ipa_tasks.atomic_files import atomic_write_text


def adaptation_dir(home: Path, pipeline: str) -> Path:
    return Path(home) / "adaptation" / pipeline


@dataclass(frozen=True)
class LoopState:
    last_known_rps: float | None = None
    """Peak per-second rate of the last window that was observed (not a fallback)."""
    observed_at: float | None = None
    """Unix time of that observation."""
    replay_t0: float | None = None
    """Unix time a trace replay without its own ``t0`` started (its first tick)."""


def read_state(home: Path, pipeline: str) -> LoopState:
    path = adaptation_dir(home, pipeline) / "state.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LoopState(**{k: None if v is None else float(v) for k, v in data.items()})
    except (OSError, ValueError, TypeError):
        # No state (first tick) or a damaged file: the loop then knows no load yet, which it handles.
        return LoopState()


def write_state(home: Path, pipeline: str, state: LoopState) -> None:
    atomic_write_text(adaptation_dir(home, pipeline) / "state.json", json.dumps(asdict(state)) + "\n")
