"""The queueing term against closed forms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ipa_tasks.optimizer.queueing import batch_formation_delay, erlang_c, queue_wait


def test_erlang_c_closed_forms():
    # M/M/1: P(wait) = rho. M/M/2 with a = 1: 1/3.
    assert erlang_c(np.array([1]), np.array([0.6]))[0] == pytest.approx(0.6)
    assert erlang_c(np.array([2]), np.array([1.0]))[0] == pytest.approx(1 / 3)
    assert erlang_c(np.array([3]), np.array([3.5]))[0] == 1.0  # unstable


def test_wait_quantile_mm1_with_allen_cunneen_factor():
    lam, h = 10.0, 12.0
    expected = 0.5 * math.log((lam / h) / 0.01) / (h - lam)  # (ca^2 + cs^2)/2 = 1/2 at batch 1
    assert queue_wait(lam, 1, h, 1) == pytest.approx(expected)


def test_wait_falls_with_replicas_and_vanishes():
    waits = [float(queue_wait(30.0, 2, 8.0, n)) for n in range(4, 12)]
    assert all(a >= b for a, b in itertools.pairwise(waits))
    assert waits[-1] == 0.0, "once P(wait) < 1 % the p99 wait is zero"


def test_unstable_and_idle():
    assert queue_wait(10.0, 1, 5.0, 2) == math.inf  # n * h == load
    assert queue_wait(0.0, 4, 5.0, 1) == 0.0


def test_batch_formation():
    assert batch_formation_delay(10.0, 4) == pytest.approx(0.3)
    assert batch_formation_delay(0.0, 4) == 0.0
