"""The names a user picks from (policies, solvers), without importing the optimizer itself: DAG files
build their trigger forms from these at every parse."""

from __future__ import annotations

from typing import Literal, get_args

PolicyName = Literal["ipa", "fa2-low", "fa2-high", "rim"]
POLICIES: tuple[str, ...] = get_args(PolicyName)
SolverName = Literal["auto", "gurobi", "highs", "brute-force"]
SOLVERS: tuple[str, ...] = get_args(SolverName)
