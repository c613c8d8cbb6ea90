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
    sizes = [len(o) for o in options]
    n_x = sum(sizes)
    starts = np.concatenate(([0], np.cumsum(sizes)))
    stage_slices = tuple(slice(int(starts[i]), int(starts[i + 1])) for i in range(len(options)))
    product = accuracy_method == "product"

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []

    def add_rows(entry_row: np.ndarray, columns: np.ndarray, values: np.ndarray, low, high) -> None:
        """Append a block of rows; ``entry_row`` numbers each entry's row within the block."""
        rows.append(len(lo) + np.asarray(entry_row, dtype=np.int64))
        cols.append(np.asarray(columns, dtype=np.int64))
        vals.append(np.asarray(values, dtype=float))
        lo.extend(np.atleast_1d(low))
        hi.extend(np.atleast_1d(high))

    def add_row(columns: np.ndarray, values: np.ndarray, low: float, high: float) -> None:
        add_rows(np.zeros(len(columns), dtype=np.int64), columns, values, low, high)

    # One option per stage: row s holds stage s's columns.
    add_rows(
        np.repeat(np.arange(len(options)), sizes),
        np.arange(n_x),
        np.ones(n_x),
        [1.0] * len(options),
        [1.0] * len(options),
    )
    all_x = np.arange(n_x)
    add_row(all_x, np.concatenate([o.latency_s for o in options]), -np.inf, sla_s)
    if max_total_cores is not None:
        add_row(
            all_x, np.concatenate([o.cores_total for o in options]).astype(float), -np.inf, max_total_cores
        )

    c = np.concatenate([-o.penalty for o in options])
    n_vars = n_x
    if product:
        n_stages = len(options)
        p_col = n_x + np.arange(n_stages)  # P[s]
        n_vars += n_stages
        # Per stage: its variants, each option's variant position, and one option index per variant.
        variants_per_stage = [np.unique(o.variant, return_index=True, return_inverse=True) for o in options]
        # Bounds of the running product P[s] over the options that remain.
        upper = np.cumprod([o.score.max() for o in options])
        lower = np.cumprod([o.score.min() for o in options])
        z_next = n_vars
        n_vars += sum(len(v[0]) for v in variants_per_stage[1:])
        # P[1] = sum_o a[o] x[1,o]
        first = stage_slices[0]
        add_row(
            np.concatenate([np.arange(first.start, first.stop), [p_col[0]]]),
            np.concatenate([options[0].score, [-1.0]]),
            0.0,
            0.0,
        )
        for s in range(1, n_stages):
            o, sl = options[s], stage_slices[s]
            variants, first_option, variant_of = variants_per_stage[s]
            k = len(variants)
            z_cols = z_next + np.arange(k)
            z_next += k
            # sum_v z[s,v] = P[s-1]
            add_row(np.concatenate([z_cols, [p_col[s - 1]]]), np.concatenate([np.ones(k), [-1.0]]), 0.0, 0.0)
            # lower[s-1] * y[s,v] <= z[s,v] <= upper[s-1] * y[s,v], y[s,v] = sum of x over v's options.
            # Exact for binary y with any valid bounds; the tightest bounds make the LP relaxation strong.
            entry_row = np.concatenate([np.arange(k), variant_of])
            columns = np.concatenate([z_cols, np.arange(sl.start, sl.stop)])
            ones = np.ones(len(o))
            add_rows(
                entry_row,
                columns,
                np.concatenate([np.ones(k), -upper[s - 1] * ones]),
                [-np.inf] * k,
                [0.0] * k,
            )
            add_rows(
                entry_row,
                columns,
                np.concatenate([np.ones(k), -lower[s - 1] * ones]),
                [0.0] * k,
                [np.inf] * k,
            )
            # P[s] = sum_v a[s,v] z[s,v]
            add_row(
                np.concatenate([z_cols, [p_col[s]]]),
                np.concatenate([o.score[first_option], [-1.0]]),
                0.0,
                0.0,
            )
        c = np.concatenate([c, np.zeros(n_vars - n_x)])
        c[p_col[-1]] = weights.accuracy_weight
    else:
        c = c + weights.accuracy_weight * np.concatenate([o.score for o in options])

    a_matrix = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(lo), n_vars)
    )
    integer = np.zeros(n_vars, dtype=bool)
    integer[:n_x] = True
    lb, ub = np.zeros(n_vars), np.ones(n_vars)
    if product:
        lb[p_col], ub[p_col] = lower, upper
    return MilpModel(
        c=c,
        A=a_matrix,
        row_lo=np.array(lo),
        row_hi=np.array(hi),
        lb=lb,
        ub=ub,
        integer=integer,
        stage_slices=stage_slices,
    )
