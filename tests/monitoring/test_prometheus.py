"""PrometheusSource against a real HTTP server that answers as Prometheus does (``conftest.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ipa_tasks.monitoring import DEFAULT_PROMETHEUS_QUERY, PrometheusSource, SourceUnavailable, observe

NOW = 1_764_000_000.7
END = 1_764_000_000  # floor(NOW): the instant that closes the newest whole second
QUERY = DEFAULT_PROMETHEUS_QUERY.format(pipeline="video")


def ramp(first: int, last: int, offset: int = 0) -> dict[int, str]:
    """Value ``t - END + 10 + offset`` at every instant ``t`` in ``[first, last]``."""
    return {t: str(t - END + 10 + offset) for t in range(first, last + 1)}


def test_the_default_query_names_the_pipeline():
    assert QUERY == 'sum(rate(ipa_router_requests_total{pipeline="video"}[5s]))'


def test_asks_for_the_window_at_one_second_steps_and_aligns_the_samples(prometheus):
    prometheus.series = [ramp(END - 100, END + 100)]  # the server must pick the range itself
    rates = PrometheusSource(prometheus.url, QUERY).rates(5, NOW)
    assert prometheus.requests == [{"query": QUERY, "start": str(END - 4), "end": str(END), "step": "1"}]
    # Instants END-4 .. END close the five whole seconds of the window; their values are 6 .. 10.
    np.testing.assert_array_equal(rates, [6.0, 7.0, 8.0, 9.0, 10.0])


def test_a_whole_second_now_ends_the_window_at_that_instant(prometheus):
    prometheus.series = [ramp(END - 100, END + 100)]
    np.testing.assert_array_equal(PrometheusSource(prometheus.url, QUERY).rates(3, float(END)), [8, 9, 10])


def test_series_are_summed_per_instant_and_a_missing_sample_is_nan(prometheus):
    first = END - 5
    a = ramp(first, END)
    b = {t: "100" for t in range(first, END + 1) if t != END - 2}  # this pod missed one scrape
    del a[END - 4], a[END - 3]
    b.pop(END - 3)  # neither pod has END-3
    prometheus.series = [a, b]
    rates = PrometheusSource(prometheus.url, QUERY).rates(6, NOW)
    np.testing.assert_array_equal(rates, [105.0, 100.0, np.nan, 8.0, 109.0, 110.0])


def test_nan_and_infinite_values_make_that_second_unknown(prometheus):
    a = ramp(END - 3, END)
    a[END - 2], a[END] = "NaN", "+Inf"
    b = {t: "1" for t in range(END - 3, END + 1)}
    prometheus.series = [a, b]
    rates = PrometheusSource(prometheus.url, QUERY).rates(4, NOW)
    np.testing.assert_array_equal(rates, [8.0, np.nan, 10.0, np.nan])


def test_no_series_at_all_is_a_window_of_gaps(prometheus):
    rates = PrometheusSource(prometheus.url, QUERY).rates(4, NOW)
    assert rates.shape == (4,) and np.isnan(rates).all()


def test_the_name_is_the_url_without_a_trailing_slash(prometheus):
    source = PrometheusSource(prometheus.url + "/", QUERY)
    assert source.name == f"prometheus {prometheus.url}"
    prometheus.series = [ramp(END - 1, END)]
    np.testing.assert_array_equal(source.rates(2, NOW), [9, 10])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("promql-error", r"answered HTTP 400: bad_data: 1:5: parse error"),
        ("error-status", r"the query failed at http://127\.0\.0\.1:\d+: execution: query timed out"),
        ("http-500", r"answered HTTP 500: internal error"),
        ("not-json", r"answered something that is not JSON: b'<html>login required"),
        ("vector", r"answered a vector result, expected a matrix"),
    ],
)
def test_each_failure_is_unavailable_and_says_why(prometheus, mode, expected):
    prometheus.mode = mode
    with pytest.raises(SourceUnavailable, match=expected):
        PrometheusSource(prometheus.url, QUERY).rates(5, NOW)


def test_a_server_slower_than_the_timeout_is_unavailable(prometheus):
    prometheus.delay_s = 0.5
    with pytest.raises(SourceUnavailable, match=r"did not answer within 0\.1 s"):
        PrometheusSource(prometheus.url, QUERY, timeout_s=0.1).rates(5, NOW)


def test_a_closed_server_is_unavailable(dead_prometheus_url):
    with pytest.raises(
        SourceUnavailable, match=rf"cannot connect to {dead_prometheus_url}: Connection refused"
    ):
        PrometheusSource(dead_prometheus_url, QUERY).rates(5, NOW)


def test_observe_fills_a_scrape_gap_and_falls_back_when_prometheus_goes_down(prometheus):
    series = ramp(END - 9, END)
    del series[END - 5]
    prometheus.series = [series]
    source = PrometheusSource(prometheus.url, QUERY)
    seen = observe(source, 10, last_known_rps=None, now=NOW)
    np.testing.assert_array_equal(seen.rates, [1, 2, 3, 4, 6, 6, 7, 8, 9, 10])
    assert (seen.missing, seen.fallback, seen.source) == (1, False, f"prometheus {prometheus.url}")

    prometheus.mode = "http-500"
    down = observe(source, 10, last_known_rps=float(seen.rates[-1]), now=NOW + 30)
    assert down.fallback and math.isclose(down.rates[0], 12.0) and len(down.rates) == 10
    assert "HTTP 500" in down.message and "12 rps" in down.message
