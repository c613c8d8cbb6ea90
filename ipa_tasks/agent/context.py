"""What one agent session may see and do: the pipeline's planner, the load, what runs, and whether it may
apply (pydantic-ai's ``deps``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipa_tasks.actuation.target import Target
from ipa_tasks.optimizer.plan import Plan
from ipa_tasks.optimizer.planner import Planner
from ipa_tasks.spec import PipelineSpec

DEFAULT_MARGIN = 0.02
"""How much lower (relative to the MILP's objective) an agent's objective may be and still be used."""


@dataclass
class PlanningContext:
    planner: Planner
    load_rps: float
    """The load to plan for: the forecast, with its margin."""
    history: tuple[float, ...] = ()
    """Recent requests per second, oldest first."""
    observation: dict[str, Any] | None = None
    """The loop's summary of the observed load (source, last and peak rps, gaps), when a tick asks."""
    forecaster: str = ""
    current: Plan | None = None
    """What runs (None: nothing yet); changes from it are charged the spec's change penalty."""
    target: Target | None = None
    may_apply: bool = False
    """Whether the apply tool may change the target. False unless the user said so (``--apply``)."""
    margin: float = DEFAULT_MARGIN
    home: Path | None = None
    tracking_uri: str = ""
    replay_s: int = 60
    """Seconds of the coming load the evaluate tool replays a candidate over."""
    decision: dict[str, Any] | None = None
    """The recorded decision an ``explain`` session is about."""
    applied: list[dict[str, Any]] = field(default_factory=list)
    """What the apply tool did (its reports), in order."""

    @property
    def spec(self) -> PipelineSpec:
        return self.planner.spec
