"""IPA's four 20-minute load windows (``reference/ipa.md`` section 6), per second and damped by 8 as IPA
replayed them, from ``$IPA_WORKLOAD_PATTERNS`` or the shared copy beside the repository
(``<repo>/../shared/data/ipa/ipa_workload_patterns_per_second.csv``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

PATTERNS = ("bursty", "steady-low", "steady-high", "fluctuating")
PATTERNS_VARIABLE = "IPA_WORKLOAD_PATTERNS"
SHARED_PATTERNS = Path("shared") / "data" / "ipa" / "ipa_workload_patterns_per_second.csv"


def default_patterns_path() -> Path:
    configured = os.environ.get(PATTERNS_VARIABLE)
    return Path(configured) if configured else Path(__file__).resolve().parents[3] / SHARED_PATTERNS


def load_pattern(name: str, path: Path | None = None) -> np.ndarray:
    """The window ``name`` (one of ``PATTERNS``), damped by 8, in requests per second."""
    if name not in PATTERNS:
        raise ValueError(f"unknown load window {name!r}; choose one of {', '.join(PATTERNS)}")
    source = path or default_patterns_path()
    column = f"{name.replace('-', '_')}_damped8"
    try:
        table = pd.read_csv(source, usecols=["second", column])
    except (OSError, ValueError) as exc:
        raise ValueError(f"{source}: cannot read column {column!r}: {exc}") from None
    return table.sort_values("second")[column].to_numpy(dtype=float)
