"""What a load source is: anything that can tell the per-second request rate of the recent past.

The adaptation loop asks for the rate of the last couple of minutes every tick and must not care whether it
comes from Prometheus, the local serving runtime's own file or a replayed trace; each of those implements
:class:`LoadSource`. A source that cannot answer raises :class:`SourceUnavailable` and the caller decides
what to do instead (:func:`~ipa_tasks.monitoring.observation.observe` keeps the last known rate).

The window of ``seconds`` whole seconds ending at ``now`` is the seconds labelled (by their start, in unix
time) ``floor(now) - seconds`` to ``floor(now) - 1``. The second in progress is left out: its count is not
complete yet, and reading it would make the newest value look like a drop in load.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np


class SourceUnavailable(Exception):
    """The source cannot be read now (unreachable, a bad answer, stale); the message says why in plain
    words."""


class LoadSource(Protocol):
    name: str
    """Plain description for logs, e.g. ``prometheus http://127.0.0.1:9090``."""

    def rates(self, seconds: int, now: float) -> np.ndarray:
        """Per-second request rate for the ``seconds`` whole seconds ending at ``now`` (unix time), oldest
        first, length exactly ``seconds``; NaN where the source has no sample. Raises SourceUnavailable."""
        ...


def window_seconds(seconds: int, now: float) -> np.ndarray:
    """The unix seconds of the window (each labelled by its start), oldest first."""
    if seconds < 1:
        raise ValueError(f"the window must be at least one second, got {seconds}")
    end = math.floor(now)
    return np.arange(end - seconds, end, dtype=np.int64)
