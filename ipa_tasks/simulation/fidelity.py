"""How close the simulator comes to the live runtime (``ipa fidelity RUN``): the same pipeline, profile and
load window, once served for real by ``ipa demo`` and once replayed in the simulator.

What: a demo run's folder holds what it replayed (``demo.json``: the spec, the trace window, the scale, the
interval, the seed), the profile it planned with (``profile.csv``), every request (``requests.csv``) and
the decisions (``decisions.csv``). :func:`replay_demo_run` runs the simulator on the same window with the
same profile, interval and forecaster (the one the decisions name), and :func:`compare` puts the two side
by side: requests, throughput (served per second), p50/p99 of the served, SLA violations (late + dropped,
and dropped only), plan changes and mean plan accuracy, with live minus simulated.

Why: the simulator is only worth its speed if its answers carry over; where they do not, this says by how
much (on the demo pipelines, the serving hops the profiles leave out; README, "The demo").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ipa_tasks.atomic_files import atomic_write, atomic_write_text
from ipa_tasks.simulation.replay import ReplayResult

FIDELITY_FILE = "fidelity.md"


def _live_numbers(requests: pd.DataFrame, decisions: pd.DataFrame, seconds: float, sla_s: float) -> dict:
    served = pd.to_numeric(requests.loc[requests["outcome"] == "ok", "latency_s"], errors="coerce").dropna()
    dropped = int((requests["outcome"] != "ok").sum())
    late = int((served > sla_s).sum())
    planned = decisions[decisions["configuration"].astype(str) != ""]
    return {
        "requests": len(requests),
        "throughput_rps": len(served) / seconds if seconds else math.nan,
        "p50_latency_s": float(np.percentile(served, 50)) if len(served) else math.nan,
        "p99_latency_s": float(np.percentile(served, 99)) if len(served) else math.nan,
        "violation_share": (late + dropped) / len(requests) if len(requests) else math.nan,
        "dropped_share": dropped / len(requests) if len(requests) else math.nan,
        "plan_changes": int(pd.to_numeric(decisions.get("changed", 0), errors="coerce").fillna(0).sum()),
        "mean_accuracy": float(pd.to_numeric(planned["accuracy"], errors="coerce").mean()),
    }


def compare(
    requests: pd.DataFrame, decisions: pd.DataFrame, simulated: ReplayResult, seconds: float, sla_s: float
) -> pd.DataFrame:
    """One row per measure: live, simulated, live - simulated."""
    live = _live_numbers(requests, decisions, seconds, sla_s)
    summary = simulated.summary
    sim = {
        "requests": summary["requests"],
        "throughput_rps": summary["served"] / seconds if seconds else math.nan,
        "p50_latency_s": summary["p50_latency_s"],
        "p99_latency_s": summary["p99_latency_s"],
        "violation_share": summary["violation_share"],
        "dropped_share": summary["dropped_share"],
        "plan_changes": summary["plan_changes"],
        "mean_accuracy": summary["mean_accuracy"],
    }
    rows = [{"measure": k, "live": float(live[k]), "simulated": float(sim[k])} for k in live]
    table = pd.DataFrame(rows)
    table["difference"] = table["live"] - table["simulated"]
    return table


def replay_demo_run(folder: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Simulate what the demo run in ``folder`` served, and compare; the table and the run's settings."""
    from ipa_tasks.adaptation.decisions import read_decisions
    from ipa_tasks.forecasting.registry import baseline_forecasters
    from ipa_tasks.forecasting.trace_location import default_trace_path
    from ipa_tasks.optimizer.planner import Planner
    from ipa_tasks.profiles import read_profile
    from ipa_tasks.serving.load_generator import trace_workload
    from ipa_tasks.simulation.replay import ReplayOptions, simulate, window_forecaster
    from ipa_tasks.spec import load_spec

    try:
        run = json.loads((folder / "demo.json").read_text(encoding="utf-8"))
        requests = pd.read_csv(folder / "requests.csv")
        decisions = read_decisions(folder / "decisions.csv")
        profile = read_profile(folder / "profile.csv")
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{folder}: not a complete demo run ({exc}); run ipa demo first") from None
    spec = load_spec(run["spec"])
    planner = Planner(spec, profile)
    workload = trace_workload(default_trace_path(), run["trace_start_s"], run["seconds"], scale=run["scale"])
    used = [f for f in decisions["forecaster"] if f]
    forecaster = used[0] if used else "window-max"
    if forecaster not in ("last-value", "window-max", "ewma", "holt"):
        # The LSTM the run used may since have been replaced; the window max is its stated fallback.
        forecaster = "window-max"
    options = ReplayOptions(interval_s=int(run["interval_s"]), seed=int(run["seed"]))
    forecast = window_forecaster(
        forecaster,
        history_s=options.history_s,
        horizon_s=options.horizon_s,
        margin=0.1,
        make=lambda n: baseline_forecasters(options.horizon_s, 0.1)[n],
    )
    simulated = simulate(planner, planner.profile, workload, forecast, options)
    table = compare(requests, decisions, simulated, float(run["seconds"]), spec.sla_s)
    return table, {**run, "forecaster": forecaster, "sla_s": spec.sla_s}


def write_fidelity(folder: Path, table: pd.DataFrame, run: dict[str, Any]) -> Path:
    atomic_write(folder / "fidelity.csv", lambda tmp: table.to_csv(tmp, index=False))
    lines = ["| measure | live | simulated | live - simulated |", "|---|---|---|---|"]
    for row in table.to_dict("records"):
        live, simulated, difference = row["live"], row["simulated"], row["difference"]
        lines.append(f"| {row['measure']} | {live:.4g} | {simulated:.4g} | {difference:+.4g} |")
    window = f"trace {run['trace_start_s']}+{run['seconds']} s x{run['scale']:g}"
    text = (
        f"# Fidelity: {Path(run['spec']).stem}, {window}\n\n"
        f"The demo run of this folder against the replay simulator on the same window, profile, interval "
        f"({run['interval_s']} s) and forecaster ({run['forecaster']}); SLA {run['sla_s']:g} s.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    path = folder / FIDELITY_FILE
    atomic_write_text(path, text)
    return path
