"""Load monitoring for the adaptation loop: the per-second request rate of the recent past of one pipeline,
from Prometheus, the local serving runtime's file or a replayed trace, behind one interface
(:class:`LoadSource`), and :func:`observe`, which always gives the loop something it can act on: the
observed load with its gaps filled, or the last known load with a margin when the source fails."""

from ipa_tasks.monitoring.config import source_from_config
from ipa_tasks.monitoring.observation import LoadObservation, observe
from ipa_tasks.monitoring.prometheus import DEFAULT_PROMETHEUS_QUERY, PrometheusSource
from ipa_tasks.monitoring.rate_file import RateFileSource, append_rates
from ipa_tasks.monitoring.source import LoadSource, SourceUnavailable
from ipa_tasks.monitoring.trace_replay import TraceReplaySource

__all__ = [
    "DEFAULT_PROMETHEUS_QUERY",
    "LoadObservation",
    "LoadSource",
    "PrometheusSource",
    "RateFileSource",
    "SourceUnavailable",
    "TraceReplaySource",
    "append_rates",
    "observe",
    "source_from_config",
]
