"""Where the Twitter load trace is, with nothing but the standard library: DAG files read it at every parse.

``$IPA_TWITTER_TRACE`` if set, else the shared trace beside the repository
(``<repo>/../shared/data/twitter-trace/requests_per_second.csv.gz``).
"""

from __future__ import annotations

import os
from pathlib import Path

TRACE_VARIABLE = "IPA_TWITTER_TRACE"
SHARED_TRACE = Path("shared") / "data" / "twitter-trace" / "requests_per_second.csv.gz"


def default_trace_path() -> Path:
    configured = os.environ.get(TRACE_VARIABLE)
    return Path(configured) if configured else Path(__file__).resolve().parents[3] / SHARED_TRACE
