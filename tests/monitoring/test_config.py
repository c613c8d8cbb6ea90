"""source_from_config builds each kind of source and names the field of a bad configuration."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from ipa_tasks.monitoring import PrometheusSource, RateFileSource, TraceReplaySource, source_from_config

T0 = 1_764_000_000


@pytest.fixture
def trace(tmp_path):
    """A 100-second trace whose damped value at second i is i (8i + 3 requests, damped by 8)."""
    path = tmp_path / "trace.csv.gz"
    with gzip.open(path, "wt") as file:
        file.write("second,requests\n" + "".join(f"{i},{8 * i + 3}\n" for i in range(100)))
    return path


def test_prometheus_gets_the_default_query_for_the_pipeline(tmp_path):
    source = source_from_config({"kind": "prometheus", "url": "http://prom:9090/"}, "video", tmp_path)
    assert isinstance(source, PrometheusSource)
    assert source.name == "prometheus http://prom:9090"
    assert source.query == 'sum(rate(ipa_router_requests_total{pipeline="video"}[5s]))'
    assert source.timeout_s == 5.0


def test_a_custom_query_is_used_as_written_with_the_pipeline_filled_in(tmp_path):
    config = {"kind": "prometheus", "url": "http://prom:9090", "query": 'sum(rate(x{p="{pipeline}"}[2s]))'}
    source = source_from_config({**config, "timeout_s": 2}, "nlp", tmp_path)
    assert source.query == 'sum(rate(x{p="nlp"}[2s]))' and source.timeout_s == 2.0


def test_a_scaled_trace_replay_multiplies_the_damped_trace(tmp_path, trace):
    config = {"kind": "trace", "path": str(trace), "scale": 2.5, "start": 10, "t0": float(T0)}
    source = source_from_config(config, "video", tmp_path)
    assert source.rates(2, T0 + 2).tolist() == [25.0, 27.0] and "times 2.5" in source.name


def test_a_trace_without_a_path_replays_the_twitter_trace(tmp_path, trace, monkeypatch):
    monkeypatch.setenv("IPA_TWITTER_TRACE", str(trace))
    source = source_from_config({"kind": "trace", "t0": T0, "start": 10}, "video", tmp_path)
    assert isinstance(source, TraceReplaySource) and str(trace) in source.name
    assert source.rates(3, T0 + 3).tolist() == [10.0, 11.0, 12.0]


def test_local_reads_the_pipelines_file_under_home_unless_a_path_is_given(tmp_path):
    source = source_from_config({"kind": "local"}, "video", tmp_path)
    assert isinstance(source, RateFileSource)
    assert source.path == tmp_path / "serving" / "video" / "requests.csv" and source.stale_after_s == 10.0
    relative = source_from_config({"kind": "local", "path": "x/r.csv", "stale_after_s": 3}, "video", tmp_path)
    assert relative.path == tmp_path / "x" / "r.csv" and relative.stale_after_s == 3.0
    absolute = source_from_config({"kind": "local", "path": "/srv/r.csv"}, "video", tmp_path)
    assert str(absolute.path) == "/srv/r.csv"


def test_trace_replays_the_damped_trace(tmp_path, trace):
    config = {"kind": "trace", "path": str(trace), "damping": 8, "start": 40, "t0": float(T0)}
    source = source_from_config(config, "video", tmp_path)
    assert isinstance(source, TraceReplaySource)
    assert source.name == f"trace replay {trace} (damping 8) from second 40"
    np.testing.assert_array_equal(source.rates(3, T0 + 10.5), [47, 48, 49])
    undamped = source_from_config({**config, "damping": 1}, "video", tmp_path)
    np.testing.assert_array_equal(undamped.rates(1, T0 + 1), [8 * 40 + 3])


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (["prometheus"], "expected a mapping with a 'kind', got list"),
        ({}, "'kind' must be one of prometheus, local, trace, got None"),
        ({"kind": "kafka"}, "'kind' must be one of prometheus, local, trace, got 'kafka'"),
        ({"kind": "prometheus"}, "load source: 'url' is required for kind prometheus"),
        ({"kind": "prometheus", "url": "prom:9090"}, "'url' must start with http:// or https://"),
        ({"kind": "prometheus", "url": ""}, "'url' must be a non-empty string"),
        (
            {"kind": "prometheus", "url": "http://p", "uri": "x"},
            "unknown field\\(s\\) 'uri' for kind prometheus",
        ),
        ({"kind": "prometheus", "url": "http://p", "timeout_s": 0}, "'timeout_s' must be positive"),
        ({"kind": "prometheus", "url": "http://p", "query": 3}, "'query' must be a non-empty string"),
        ({"kind": "local", "stale_after_s": "10"}, "'stale_after_s' must be a number, got '10'"),
        ({"kind": "local", "url": "http://p"}, "unknown field\\(s\\) 'url' for kind local"),
        ({"kind": "trace", "path": "TRACE"}, "'t0' is required for kind trace"),
        ({"kind": "trace", "path": "TRACE", "t0": True}, "'t0' must be a number"),
        (
            {"kind": "trace", "path": "TRACE", "t0": 1.0, "damping": 0},
            "'damping' must be a whole number of at least 1",
        ),
        (
            {"kind": "trace", "path": "TRACE", "t0": 1.0, "start": 2.5},
            "'start' must be a whole number of at least 0",
        ),
        (
            {"kind": "trace", "path": "TRACE", "t0": 1.0, "start": 100},
            "'start' 100 is beyond the trace's 100 seconds",
        ),
        (
            {"kind": "trace", "path": "missing.csv.gz", "t0": 1.0},
            "'path': .*missing.csv.gz: cannot read the trace",
        ),
    ],
)
def test_a_bad_config_names_the_field(tmp_path, trace, config, match):
    if isinstance(config, dict) and config.get("path") == "TRACE":
        config = {**config, "path": str(trace)}
    with pytest.raises(ValueError, match=match):
        source_from_config(config, "video", tmp_path)
