"""The window every source answers for: whole seconds ending at ``now``, the second in progress left out."""

from __future__ import annotations

import numpy as np
import pytest

from ipa_tasks.monitoring.source import window_seconds


def test_the_window_is_the_whole_seconds_before_now():
    np.testing.assert_array_equal(window_seconds(3, 1000.9), [997, 998, 999])
    np.testing.assert_array_equal(window_seconds(3, 1000.0), [997, 998, 999])
    with pytest.raises(ValueError, match="at least one second"):
        window_seconds(0, 1000.0)
