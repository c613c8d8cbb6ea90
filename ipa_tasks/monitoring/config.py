"""Which load source a pipeline is observed through, from its configuration.

Three kinds: ``prometheus`` (a cluster deployment), ``local`` (the local serving runtime's per-second file
under ``IPA_HOME``) and ``trace`` (a recorded trace replayed as if live). Every field is checked here, so a
typo fails when the configuration is read, with the field named, rather than as a source that is
"unavailable" every tick. Relative paths are relative to ``home`` (``IPA_HOME``), the one directory every
process of the system agrees on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ipa_tasks.forecasting.trace import IPA_DAMPING, TraceError
from ipa_tasks.forecasting.trace_location import default_trace_path
from ipa_tasks.monitoring.prometheus import DEFAULT_PROMETHEUS_QUERY, PrometheusSource
from ipa_tasks.monitoring.rate_file import RateFileSource
from ipa_tasks.monitoring.source import LoadSource
from ipa_tasks.monitoring.trace_replay import TraceReplaySource, cached_trace
from ipa_tasks.serving.locations import request_counts_file

_FIELDS = {
    "prometheus": {"kind", "url", "query", "timeout_s"},
    "local": {"kind", "path", "stale_after_s"},
    "trace": {"kind", "path", "damping", "scale", "start", "t0"},
}


def source_from_config(config: Mapping[str, Any], pipeline: str, home: Path) -> LoadSource:
    """The load source ``config`` describes for ``pipeline``. Raises ValueError naming the bad field.

    ``{"kind": "prometheus", "url": ..., "query": ... (optional), "timeout_s": ... (optional)}``: a custom
    query is used as written, with ``{pipeline}`` replaced by the pipeline's name;
    ``{"kind": "local", "path": ... (optional), "stale_after_s": ... (optional)}``, by default
    ``home/serving/<pipeline>/requests.csv``;
    ``{"kind": "trace", "path": ... (optional, default the Twitter trace), "damping": 8, "scale": 1.0,
    "start": 0, "t0": <unix time the replay began>}``; ``scale`` multiplies the damped trace, to bring it
    into a pipeline's range (the demo pipelines change plan at hundreds of requests per second).
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"load source: expected a mapping with a 'kind', got {type(config).__name__}")
    kind = config.get("kind")
    if kind not in _FIELDS:
        raise ValueError(f"load source: 'kind' must be one of {', '.join(_FIELDS)}, got {kind!r}")
    unknown = set(config) - _FIELDS[kind]
    if unknown:
        raise ValueError(
            f"load source: unknown field(s) {', '.join(map(repr, sorted(map(str, unknown))))} for kind {kind}"
        )
    fields = _Fields(config, kind)
    home = Path(home)
    if kind == "prometheus":
        return _prometheus(fields, pipeline)
    if kind == "local":
        path = fields.path("path", home, required=False) or request_counts_file(home, pipeline)
        return RateFileSource(path, stale_after_s=fields.number("stale_after_s", default=10.0))
    return _trace(fields, home)


def _prometheus(fields: _Fields, pipeline: str) -> PrometheusSource:
    url = fields.text("url")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"load source: 'url' must start with http:// or https://, got {url!r}")
    custom = fields.text("query", required=False)
    if custom:
        query = custom.replace("{pipeline}", pipeline)
    else:
        # The name sits inside a PromQL string literal; escape what would end it.
        query = DEFAULT_PROMETHEUS_QUERY.format(pipeline=pipeline.replace("\\", "\\\\").replace('"', '\\"'))
    return PrometheusSource(url, query, timeout_s=fields.number("timeout_s", default=5.0))


def _trace(fields: _Fields, home: Path) -> TraceReplaySource:
    path = fields.path("path", home, required=False) or default_trace_path()
    damping = fields.integer("damping", default=IPA_DAMPING, minimum=1)
    start = fields.integer("start", default=0, minimum=0)
    scale = fields.number("scale", default=1.0)
    t0 = fields.number("t0", positive=False)
    try:
        series = cached_trace(path, damping)
    except TraceError as exc:
        raise ValueError(f"load source: 'path': {exc}") from exc
    if scale != 1.0:
        series = np.floor(series * scale)
    if start >= series.size:
        raise ValueError(f"load source: 'start' {start} is beyond the trace's {series.size} seconds")
    scaled = "" if scale == 1.0 else f", times {scale:g}"
    name = f"trace replay {path} (damping {damping}{scaled}) from second {start}"
    return TraceReplaySource(series, t0=t0, start=start, name=name)


class _Fields:
    """Typed reads of one configuration, each error naming the field and the kind."""

    def __init__(self, config: Mapping[str, Any], kind: str) -> None:
        self._config = config
        self._kind = kind

    def _missing(self, field: str) -> ValueError:
        return ValueError(f"load source: {field!r} is required for kind {self._kind}")

    def text(self, field: str, *, required: bool = True) -> str:
        value = self._config.get(field)
        if value is None:
            if required:
                raise self._missing(field)
            return ""
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"load source: {field!r} must be a non-empty string, got {value!r}")
        return value.strip()

    def path(self, field: str, home: Path, *, required: bool = True) -> Path | None:
        text = self.text(field, required=required)
        if not text:
            return None
        path = Path(text).expanduser()
        return path if path.is_absolute() else home / path

    def number(self, field: str, *, default: float | None = None, positive: bool = True) -> float:
        value = self._config.get(field, default)
        if value is None:
            raise self._missing(field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"load source: {field!r} must be a number, got {value!r}")
        if positive and value <= 0:
            raise ValueError(f"load source: {field!r} must be positive, got {value!r}")
        return float(value)

    def integer(self, field: str, *, default: int, minimum: int) -> int:
        value = self._config.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(
                f"load source: {field!r} must be a whole number of at least {minimum}, got {value!r}"
            )
        return value
