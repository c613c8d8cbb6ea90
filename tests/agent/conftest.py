"""A real planner for the agent's tests: the shipped digit-strips spec with its measured profile."""

from __future__ import annotations

import pytest

from ipa_tasks.optimizer.planner import Planner
from ipa_tasks.spec import resolve_spec_path

LOAD_RPS = 60.0


@pytest.fixture(scope="session")
def planner() -> Planner:
    return Planner.from_files(resolve_spec_path("digit-strips"))
