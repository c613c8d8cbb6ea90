"""Solver backends for the option MILP: Gurobi (primary), HiGHS (fallback), brute force (reference).

Gurobi and HiGHS solve the same :class:`~ipa_tasks.optimizer.formulation.MilpModel`. Brute force does not
use the MILP at all: it enumerates every combination of the stages' options and evaluates the objective
directly (exact product of accuracies), which is what makes it a reference for the formulation.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ipa_tasks.accuracy import combined_score
from ipa_tasks.optimizer.formulation import MilpModel
from ipa_tasks.optimizer.options import StageOptions
from ipa_tasks.spec import AccuracyMethod, ObjectiveWeights

GUROBI_SIZE_LIMIT_ERRNO = 10010
FEASIBILITY_TOL = 1e-9
OBJECTIVE_SCALE = 1e4
"""Solvers get the objective scaled up: the batch tie-break (1e-6 per request of batch) would otherwise sit
below their optimality tolerances (about 1e-6) and a plan worse by a tie-break could be called optimal.
Scaling changes no argmax."""


class SolverUnavailable(RuntimeError):
    """The solver cannot be used here (not installed, or its licence refuses the model)."""


class ProblemTooLarge(RuntimeError):
    """Brute force would enumerate more combinations than allowed."""


@dataclass(frozen=True)
class SolverResult:
    solver: str
    status: str  # optimal | time_limit (best found, or none found, within the limit) | infeasible
    chosen: tuple[int, ...] | None  # option index per stage
    solve_time_s: float


@functools.cache
def _gurobi_env() -> Any:
    """One environment per process: starting one checks the licence, which costs milliseconds."""
    import gurobipy as gp

    env = gp.Env(empty=True)
    env.setParam("OutputFlag", 0)  # also silences the licence banner
    env.start()
    return env


def solve_gurobi(model: MilpModel, time_limit_s: float) -> SolverResult:
    try:
        import gurobipy as gp
        from gurobipy import GRB
    except ImportError:
        raise SolverUnavailable("gurobipy is not installed") from None
    start = time.perf_counter()
    try:
        m = gp.Model("ipa", env=_gurobi_env())
        m.Params.TimeLimit = time_limit_s
        m.Params.Threads = 1  # the models are tiny; one thread is faster and deterministic
        m.Params.MIPGap = 0.0
        m.Params.MIPGapAbs = 1e-9
        vtype = np.where(model.integer, GRB.BINARY, GRB.CONTINUOUS)
        v = m.addMVar(model.n_vars, lb=model.lb, ub=model.ub, vtype=vtype)
        # Every row is an equality or one-sided (see formulation), so one sense per row suffices.
        upper = np.isfinite(model.row_hi)
        sense = np.where(model.row_lo == model.row_hi, "=", np.where(upper, "<", ">"))
        m.addMConstr(model.A, v, sense, np.where(upper, model.row_hi, model.row_lo))

        m.setMObjective(None, model.c * OBJECTIVE_SCALE, 0.0, sense=GRB.MAXIMIZE)
        m.optimize()
    except gp.GurobiError as exc:
        # Size limit (10010), no or expired licence (10009), ...: the plan is still wanted, from HiGHS.
        if exc.errno == GUROBI_SIZE_LIMIT_ERRNO:
            raise SolverUnavailable(
                f"Gurobi's size-limited licence refused a model of {model.n_vars} variables and "
                f"{model.n_rows} constraints (error {exc.errno})"
            ) from None
        raise SolverUnavailable(f"Gurobi failed: {exc} (error {exc.errno})") from None
    elapsed = time.perf_counter() - start
    if m.SolCount == 0:
        status = "time_limit" if m.Status == GRB.TIME_LIMIT else "infeasible"
        return SolverResult("gurobi", status, None, elapsed)
    status = "optimal" if m.Status == GRB.OPTIMAL else "time_limit"
    return SolverResult("gurobi", status, tuple(model.chosen(v.X)), elapsed)


def solve_highs(model: MilpModel, time_limit_s: float) -> SolverResult:
    try:
        import highspy
    except ImportError:
        raise SolverUnavailable("highspy is not installed") from None
    start = time.perf_counter()
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("mip_rel_gap", 0.0)
    h.setOptionValue("mip_abs_gap", 1e-9)
    h.setOptionValue("threads", 1)
    inf = highspy.kHighsInf
    lp = highspy.HighsLp()
    lp.num_col_ = model.n_vars
    lp.num_row_ = model.n_rows
    lp.sense_ = highspy.ObjSense.kMaximize
    lp.col_cost_ = model.c * OBJECTIVE_SCALE
    lp.col_lower_ = model.lb
    lp.col_upper_ = model.ub
    lp.row_lower_ = np.where(np.isfinite(model.row_lo), model.row_lo, -inf)
    lp.row_upper_ = np.where(np.isfinite(model.row_hi), model.row_hi, inf)
    csc = model.A.tocsc()
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = csc.indptr
    lp.a_matrix_.index_ = csc.indices
    lp.a_matrix_.value_ = csc.data
    lp.integrality_ = [
        highspy.HighsVarType.kInteger if is_int else highspy.HighsVarType.kContinuous
        for is_int in model.integer
    ]
    h.passModel(lp)
    h.run()
    elapsed = time.perf_counter() - start
    status = h.getModelStatus()
    solution = np.asarray(h.getSolution().col_value)
    if status == highspy.HighsModelStatus.kOptimal:
        return SolverResult("highs", "optimal", tuple(model.chosen(solution)), elapsed)
    if status == highspy.HighsModelStatus.kTimeLimit and h.getInfo().primal_solution_status == 2:
        return SolverResult("highs", "time_limit", tuple(model.chosen(solution)), elapsed)
    timed_out = status == highspy.HighsModelStatus.kTimeLimit
    return SolverResult("highs", "time_limit" if timed_out else "infeasible", None, elapsed)


def combination_objective(
    options: list[StageOptions],
    chosen: tuple[int, ...] | list[int],
    weights: ObjectiveWeights,
    accuracy_method: AccuracyMethod,
) -> float:
    """The objective of one option per stage, evaluated directly (no MILP)."""
    scores = [float(o.score[i]) for o, i in zip(options, chosen, strict=True)]
    penalty = sum(float(o.penalty[i]) for o, i in zip(options, chosen, strict=True))
    return weights.accuracy_weight * combined_score(scores, accuracy_method) - penalty


def solve_brute_force(
    options: list[StageOptions],
    weights: ObjectiveWeights,
    accuracy_method: AccuracyMethod,
    sla_s: float,
    max_total_cores: int | None,
    max_combinations: int = 5_000_000,
) -> SolverResult:
    """Enumerate every combination (vectorised, stage by stage); ties go to the first in stage order."""
    start = time.perf_counter()
    count = math.prod(len(o) for o in options)
    if count > max_combinations:
        raise ProblemTooLarge(
            f"brute force would enumerate {count:,} combinations (limit {max_combinations:,})"
        )
    if count == 0:
        return SolverResult("brute-force", "infeasible", None, time.perf_counter() - start)
    latency = np.zeros(1)
    penalty = np.zeros(1)
    cores = np.zeros(1)
    accuracy = np.ones(1) if accuracy_method == "product" else np.zeros(1)
    for o in options:
        latency = (latency[:, None] + o.latency_s[None, :]).ravel()
        penalty = (penalty[:, None] + o.penalty[None, :]).ravel()
        cores = (cores[:, None] + o.cores_total[None, :]).ravel()
        if accuracy_method == "product":
            accuracy = (accuracy[:, None] * o.score[None, :]).ravel()
        else:
            accuracy = (accuracy[:, None] + o.score[None, :]).ravel()
    feasible = latency <= sla_s + FEASIBILITY_TOL
    if max_total_cores is not None:
        feasible &= cores <= max_total_cores
    if not feasible.any():
        return SolverResult("brute-force", "infeasible", None, time.perf_counter() - start)
    objective = np.where(feasible, weights.accuracy_weight * accuracy - penalty, -np.inf)
    best = int(np.argmax(objective))
    chosen = np.unravel_index(best, [len(o) for o in options])
    return SolverResult("brute-force", "optimal", tuple(int(i) for i in chosen), time.perf_counter() - start)
