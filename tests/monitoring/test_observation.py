"""observe: what the adaptation loop gets from a source that works, has gaps, answers nonsense or is down."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from ipa_tasks.monitoring import LoadObservation, SourceUnavailable, observe

nan = np.nan
NOW = 1_764_000_000.5


@dataclass
class Stub:
    """A source that returns (or raises) ``answer`` and records what it was asked."""

    answer: Any
    name: str = "stub source"
    calls: list[tuple[int, float]] = field(default_factory=list)

    def rates(self, seconds: int, now: float) -> np.ndarray:
        self.calls.append((seconds, now))
        if isinstance(self.answer, BaseException):
            raise self.answer
        return np.array(self.answer, dtype=float)


def test_a_complete_window_is_passed_through_with_a_summary():
    source = Stub([1, 2, 3, 4, 5])
    seen = observe(source, 5, last_known_rps=None, now=NOW)
    assert source.calls == [(5, NOW)]
    np.testing.assert_array_equal(seen.rates, [1, 2, 3, 4, 5])
    assert (seen.source, seen.seconds, seen.missing, seen.fallback) == ("stub source", 5, 0, False)
    assert seen.message == "observed 5 s of load from stub source: mean 3 rps, peak 5 rps"


def test_a_few_gaps_are_filled_conservatively_and_reported():
    seen = observe(Stub([nan, 2, nan, nan, 7, 3, 5, nan, 1, nan]), 10, last_known_rps=50.0, now=NOW)
    np.testing.assert_array_equal(seen.rates, [2, 2, 7, 7, 7, 3, 5, 5, 1, 1])
    assert (seen.missing, seen.fallback) == (5, False)
    assert "5 s had no sample and took the larger of their neighbouring values" in seen.message


def test_exactly_the_allowed_fraction_of_gaps_is_still_an_observation():
    seen = observe(Stub([nan, nan, 1, 2]), 4, last_known_rps=50.0, max_missing_fraction=0.5, now=NOW)
    np.testing.assert_array_equal(seen.rates, [1, 1, 1, 2])
    assert not seen.fallback


def test_too_many_gaps_fall_back_to_the_last_known_rate_with_margin():
    seen = observe(Stub([nan, nan, nan, 1]), 4, last_known_rps=10.0, now=NOW)
    np.testing.assert_array_equal(seen.rates, [12.0, 12.0, 12.0, 12.0])
    assert (seen.missing, seen.fallback) == (4, True)
    assert "no sample for 3 of the last 4 s (more than 50% allowed)" in seen.message
    assert "last known rate 10 rps + 20% margin = 12 rps" in seen.message


def test_the_margin_is_the_callers():
    seen = observe(Stub(SourceUnavailable("down")), 3, last_known_rps=10.0, margin=0.5, now=NOW)
    np.testing.assert_array_equal(seen.rates, [15.0, 15.0, 15.0])
    assert "+ 50% margin = 15 rps" in seen.message


def test_an_unavailable_source_falls_back_and_says_why():
    down = Stub(SourceUnavailable("cannot connect to http://prom: Connection refused"))
    seen = observe(down, 120, last_known_rps=40.0, now=NOW)
    assert seen.fallback and seen.rates.shape == (120,) and (seen.rates == 48.0).all()
    assert seen.message == (
        "load source unavailable: cannot connect to http://prom: Connection refused; using the last known "
        "rate 40 rps + 20% margin = 48 rps for the 120 s window instead"
    )


def test_with_nothing_known_the_observation_is_empty_and_says_to_keep_the_configuration():
    seen = observe(Stub(SourceUnavailable("the file does not exist")), 120, last_known_rps=None, now=NOW)
    assert seen.fallback and seen.rates.size == 0 and seen.seconds == 120
    assert "the file does not exist" in seen.message
    assert "no load has been observed yet, so the running configuration should be kept" in seen.message


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ([1, 2, 3], "returned 3 values for a window of 4 s"),
        ([[1, 2], [3, 4]], "returned 4 values for a window of 4 s"),
        ([1, 2, -3, 4], "returned negative rates (minimum -3)"),
        ([1, np.inf, 3, 4], "returned infinite rates"),
        ([nan, nan, nan, nan], "has no sample in the last 4 s"),
    ],
)
def test_a_nonsense_answer_falls_back(answer, reason):
    seen = observe(Stub(answer), 4, last_known_rps=5.0, now=NOW)
    assert seen.fallback
    np.testing.assert_array_equal(seen.rates, [6.0] * 4)
    assert f"stub source {reason}" in seen.message


def test_a_bug_in_a_source_is_not_hidden():
    with pytest.raises(ZeroDivisionError):
        observe(Stub(ZeroDivisionError()), 4, last_known_rps=5.0, now=NOW)


def test_now_defaults_to_the_clock():
    source = Stub([1.0])
    observe(source, 1, last_known_rps=None)
    assert abs(source.calls[0][1] - time.time()) < 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seconds": 0}, "at least one second"),
        ({"margin": -0.1}, "margin must be non-negative"),
        ({"last_known_rps": nan}, "last known rate must be a non-negative number"),
        ({"last_known_rps": -1.0}, "last known rate must be a non-negative number"),
    ],
)
def test_caller_mistakes_are_refused(kwargs, match):
    arguments = {"seconds": 4, "last_known_rps": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        observe(Stub([1, 2, 3, 4]), arguments.pop("seconds"), now=NOW, **arguments)


def test_the_observation_travels_as_json_and_is_read_only():
    seen = observe(Stub([nan, 2.5, 3]), 3, last_known_rps=None, now=NOW)
    data = json.loads(json.dumps(seen.to_dict()))
    assert data == {
        "rates": [2.5, 2.5, 3.0],
        "source": "stub source",
        "seconds": 3,
        "missing": 1,
        "fallback": False,
        "message": seen.message,
    }
    back = LoadObservation.from_dict(data)
    assert back == seen and isinstance(back.rates, np.ndarray)
    with pytest.raises(ValueError):
        back.rates[0] = 99.0
    empty = observe(Stub(SourceUnavailable("x")), 3, last_known_rps=None, now=NOW)
    assert LoadObservation.from_dict(json.loads(json.dumps(empty.to_dict()))) == empty
    with pytest.raises(ValueError, match="not a load observation"):
        LoadObservation.from_dict({"rates": []})
