"""The integer program over per-stage options, in matrix form for any MILP solver.

Variables, in this column order:

* ``x[s,o]`` binary: stage ``s`` runs option ``o`` (variant, batch, cores, replicas);
* with ``accuracy_method: product`` only: ``P[s]`` in [0, 1], the product of the accuracies of stages
  ``1..s``, and ``z[s,v]`` in [0, 1] for ``s >= 2``, equal to ``P[s-1]`` if stage ``s`` runs variant ``v``
  and 0 otherwise.

Maximise ``alpha * A - sum_o penalty[o] * x[o]`` where ``A = P[S]`` (product) or ``sum_o score[o] x[o]``.

Constraints:

* one option per stage: ``sum_o x[s,o] = 1``;
* end-to-end latency: ``sum_o latency[o] x[o] <= SLA``;
* total cores (if bounded): ``sum_o cores[o] replicas[o] x[o] <= max_total_cores``;
* product chain (exact, because ``x`` is binary): ``P[1] = sum_o a[o] x[1,o]``; for ``s >= 2``:
  ``sum_v z[s,v] = P[s-1]``, ``z[s,v] <= sum_{o of v} x[s,o]``, ``P[s] = sum_v a[s,v] z[s,v]``.

Throughput and replica bounds need no rows: an option exists only if its replicas carry the load within
the bounds (:mod:`ipa_tasks.optimizer.options`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ipa_tasks.optimizer.options import StageOptions
from ipa_tasks.spec import AccuracyMethod, ObjectiveWeights


@dataclass(frozen=True)
class MilpModel:
    """``maximise c @ v  s.t.  row_lo <= A @ v <= row_hi, lb <= v <= ub, v[integer] integral``."""

    c: np.ndarray
    A: sparse.csr_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    integer: np.ndarray
    stage_slices: tuple[slice, ...]
    """Columns of ``x`` for each stage."""

    @property
    def n_vars(self) -> int:
        return len(self.c)

    @property
    def n_rows(self) -> int:
        return self.A.shape[0]

    def chosen(self, solution: np.ndarray) -> list[int]:
        """The option index chosen in each stage."""
        return [int(np.argmax(solution[sl])) for sl in self.stage_slices]


def build_milp(
    options: list[StageOptions],
    weights: ObjectiveWeights,
    accuracy_method: AccuracyMethod,
    sla_s: float,
    max_total_cores: int | None,
) -> MilpModel:
    n_stages = len(options)
    sizes = np.array([len(o) for o in options])
    n_x = int(sizes.sum())
    starts = np.concatenate(([0], np.cumsum(sizes)))
    stage_slices = tuple(slice(int(starts[i]), int(starts[i + 1])) for i in range(n_stages))
    stage_of = np.repeat(np.arange(n_stages), sizes)
    x = np.arange(n_x)
    latency = np.concatenate([o.latency_s for o in options])
    score = np.concatenate([o.score for o in options])
    blocks = _RowBlocks()
    # One option per stage (row s holds stage s's columns); end-to-end latency; core budget.
    blocks.add(stage_of, x, np.ones(n_x), np.ones(n_stages), np.ones(n_stages))
    blocks.add(np.zeros(n_x, dtype=np.int64), x, latency, [-np.inf], [sla_s])
    if max_total_cores is not None:
        cores = np.concatenate([o.cores_total for o in options]).astype(float)
        blocks.add(np.zeros(n_x, dtype=np.int64), x, cores, [-np.inf], [max_total_cores])

    c = -np.concatenate([o.penalty for o in options])
    lb, ub = np.zeros(n_x), np.ones(n_x)
    if accuracy_method == "product":
        n_vars, c, lb, ub = _product_chain(blocks, options, stage_of, score, n_x, c, weights.accuracy_weight)
    else:
        n_vars = n_x
        c = c + weights.accuracy_weight * score
    integer = np.zeros(n_vars, dtype=bool)
    integer[:n_x] = True
    a_matrix, row_lo, row_hi = blocks.matrix(n_vars)
    return MilpModel(
        c=c,
        A=a_matrix,
        row_lo=row_lo,
        row_hi=row_hi,
        lb=lb,
        ub=ub,
        integer=integer,
        stage_slices=stage_slices,
    )


class _RowBlocks:
    """Rows collected as blocks of (row within block, column, value) entries with their bounds."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.n_rows = 0

    def add(self, row, col, val, lo, hi) -> None:
        lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
        self.rows.append(self.n_rows + np.asarray(row, dtype=np.int64))
        self.cols.append(np.asarray(col, dtype=np.int64))
        self.vals.append(np.asarray(val, dtype=float))
        self.lo.append(lo)
        self.hi.append(hi)
        self.n_rows += len(lo)

    def matrix(self, n_cols: int) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
        entries = (np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols)))
        a_matrix = sparse.csr_matrix(entries, shape=(self.n_rows, n_cols))
        return a_matrix, np.concatenate(self.lo), np.concatenate(self.hi)


def _product_chain(
    blocks: _RowBlocks,
    options: list[StageOptions],
    stage_of: np.ndarray,
    score: np.ndarray,
    n_x: int,
    c: np.ndarray,
    accuracy_weight: float,
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Add the exact linearisation of the product of stage accuracies (module docstring); all stages at once.

    Returns the number of variables and the objective and bounds extended to ``P`` and ``z``.
    """
    n_stages = len(options)
    # Bounds of the running product P[s] over the options that remain.
    upper = np.cumprod([o.score.max() for o in options])
    lower = np.cumprod([o.score.min() for o in options])
    p_col = n_x + np.arange(n_stages)
    # One z per (stage >= 2, variant); `group` numbers them, `first` is one option of each.
    later = np.flatnonzero(stage_of > 0)
    variant = np.concatenate([o.variant for o in options])
    key = stage_of[later] * (int(variant.max(initial=0)) + 1) + variant[later]
    _, first, group = np.unique(key, return_index=True, return_inverse=True)
    n_z = len(first)
    z_col = n_x + n_stages + np.arange(n_z)
    z_stage = stage_of[later[first]]  # stage of each z, >= 1
    z_score = score[later[first]]

    # P[1] = sum_o a[o] x[1,o]
    first_stage = np.flatnonzero(stage_of == 0)
    blocks.add(
        np.zeros(len(first_stage) + 1, dtype=np.int64),
        np.concatenate([first_stage, [p_col[0]]]),
        np.concatenate([score[first_stage], [-1.0]]),
        [0.0],
        [0.0],
    )
    # sum_v z[s,v] = P[s-1] for s >= 2 (one row per stage, numbered s - 1)
    blocks.add(
        np.concatenate([z_stage - 1, np.arange(n_stages - 1)]),
        np.concatenate([z_col, p_col[:-1]]),
        np.concatenate([np.ones(n_z), -np.ones(n_stages - 1)]),
        np.zeros(n_stages - 1),
        np.zeros(n_stages - 1),
    )
    # lower[s-1] * y[s,v] <= z[s,v] <= upper[s-1] * y[s,v], y[s,v] = sum of x over v's options.
    # Exact for binary y with any valid bounds; the tightest bounds make the LP relaxation strong.
    for bound, lo, hi in ((upper, -np.inf, 0.0), (lower, 0.0, np.inf)):
        blocks.add(
            np.concatenate([np.arange(n_z), group]),
            np.concatenate([z_col, later]),
            np.concatenate([np.ones(n_z), -bound[stage_of[later] - 1]]),
            np.full(n_z, lo),
            np.full(n_z, hi),
        )
    # P[s] = sum_v a[s,v] z[s,v] for s >= 2
    blocks.add(
        np.concatenate([z_stage - 1, np.arange(n_stages - 1)]),
        np.concatenate([z_col, p_col[1:]]),
        np.concatenate([z_score, -np.ones(n_stages - 1)]),
        np.zeros(n_stages - 1),
        np.zeros(n_stages - 1),
    )
    n_vars = n_x + n_stages + n_z
    c = np.concatenate([c, np.zeros(n_stages + n_z)])
    c[p_col[-1]] = accuracy_weight
    lb = np.concatenate([np.zeros(n_x), lower, np.zeros(n_z)])
    ub = np.concatenate([np.ones(n_x), upper, np.ones(n_z)])
    return n_vars, c, lb, ub
