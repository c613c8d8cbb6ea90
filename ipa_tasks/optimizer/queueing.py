"""Latency a request spends in a stage *before* its batch is processed (see ``docs/optimization.md``).

The model: a stage has one batching queue (as IPA's per-stage queue) in front of ``n`` identical replicas.
Requests arrive as a Poisson stream of rate ``lam``. The queue closes a batch of ``b`` requests and hands
it to a free replica; one replica serves ``h`` requests per second at batch ``b`` (so a batch takes
``b / h`` seconds on average).

Two terms:

* **batch formation** ``(b - 1) / lam``: the first request of a batch waits for ``b - 1`` more (IPA's
  intended ``func_q``, which its code never charged);
* **queueing for a replica**: batches arrive at rate ``lam / b`` to ``n`` servers. We use the M/M/c
  waiting-time tail ``P(W > t) = C(n, a) * exp(-(n*mu - lam/b) * t)`` (``C`` is Erlang's C formula, ``a``
  the offered load in servers, ``mu = h / b``) and scale it with the Allen–Cunneen factor
  ``(ca^2 + cs^2) / 2`` for a GI/G/c queue: a batch of ``b`` Poisson arrivals has ``ca^2 = 1/b``, and
  service times of a fixed batch are close to deterministic (``cs^2 = 0``).

The quantile ``q`` of the waiting time is therefore
``((1/b) / 2) * max(0, ln(C / (1 - q))) / (n*mu - lam/b)``; it is infinite when ``n*h <= lam``.
"""

from __future__ import annotations

import numpy as np

QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


def erlang_b_table(offered: np.ndarray, max_servers: int) -> np.ndarray:
    """Erlang B blocking probability for 0..``max_servers`` servers (rows) and each offered load (columns).

    The recursion ``B(k) = a B(k-1) / (k + a B(k-1))`` is numerically stable for any load.
    """
    offered = np.atleast_1d(np.asarray(offered, dtype=float))
    table = np.empty((max_servers + 1, offered.size))
    table[0] = 1.0
    for k in range(1, max_servers + 1):
        previous = table[k - 1]
        table[k] = offered * previous / (k + offered * previous)
    return table


def erlang_c_from_b(erlang_b: np.ndarray, servers: np.ndarray, offered: np.ndarray) -> np.ndarray:
    """Erlang C (probability of waiting) from Erlang B; 1 where the queue is unstable (``a >= n``)."""
    rho = offered / servers
    with np.errstate(divide="ignore", invalid="ignore"):
        c = erlang_b / (1.0 - rho * (1.0 - erlang_b))
    return np.where(rho >= 1.0, 1.0, np.clip(c, 0.0, 1.0))


def erlang_c(servers: np.ndarray, offered: np.ndarray) -> np.ndarray:
    """Probability that an arrival waits in an M/M/c queue (Erlang C), element-wise."""
    servers, offered = np.broadcast_arrays(np.asarray(servers, dtype=np.int64), np.asarray(offered, float))
    flat_n, flat_a = servers.ravel(), offered.ravel()
    table = erlang_b_table(flat_a, int(flat_n.max(initial=1)))
    b = table[flat_n, np.arange(flat_n.size)]
    return erlang_c_from_b(b, flat_n, flat_a).reshape(servers.shape)


def batch_formation_delay(load_rps: np.ndarray, batch_size: np.ndarray) -> np.ndarray:
    """``(b - 1) / lam``; zero without load (nothing to wait for)."""
    load = np.asarray(load_rps, dtype=float)
    b = np.asarray(batch_size, dtype=float)
    with np.errstate(over="ignore"):  # a vanishing load makes the wait infinite, which is right
        return np.divide(b - 1.0, load, out=np.zeros(np.broadcast(load, b).shape), where=load > 0)


def wait_from_erlang_c(
    c: np.ndarray,
    load_rps: np.ndarray,
    batch_size: np.ndarray,
    throughput_rps: np.ndarray,
    replicas: np.ndarray,
    quantile: str,
) -> np.ndarray:
    """The waiting-time quantile given Erlang C; ``inf`` where ``n * h <= lam``, 0 without load."""
    q = QUANTILES[quantile]
    drain = (replicas * throughput_rps - load_rps) / batch_size  # n*mu - lam/b, batches per second
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.maximum(np.log(c / (1.0 - q)), 0.0)
        wait = np.where(tail > 0, (1.0 / batch_size) / 2.0 * tail / drain, 0.0)
    wait = np.where(drain > 0, wait, np.inf)
    return np.where(load_rps <= 0, 0.0, wait)


def queue_wait(
    load_rps: np.ndarray,
    batch_size: np.ndarray,
    throughput_rps: np.ndarray,
    replicas: np.ndarray,
    quantile: str = "p99",
) -> np.ndarray:
    """Quantile of the time a closed batch waits for a free replica (seconds; ``inf`` if unstable)."""
    load, b, h, n = np.broadcast_arrays(
        np.asarray(load_rps, float),
        np.asarray(batch_size, float),
        np.asarray(throughput_rps, float),
        np.asarray(replicas, np.int64),
    )
    c = erlang_c(n, np.divide(load, h))
    return wait_from_erlang_c(c, load, b, h, n, quantile)
