"""The end of a profiling round: merge each pipeline's passing tables, flag drift, publish, measure T1.

:func:`publish_round` is the ``publish`` task of the ``ipa_profile`` DAG. Per pipeline it

- flags drift: each re-profiled variant's accuracy and p50 latency against the published profile
  (:meth:`~ipa_tasks.profile_store.ProfileStore.compare_with_current`), logged as warnings, as
  ``drift.csv`` on the round's MLflow run and as the metric ``drift_flagged``;
- publishes the merged profile (:func:`~ipa_tasks.profiling_round.merged_profile`) if the GX suite passes
  on it too, otherwise quarantines it and the last good profile stays;
- for a demo pipeline, measures the end-to-end accuracy of every configuration next to the product of
  stage accuracies, writes it beside the published profile and logs table and plot to MLflow;
- closes the round's MLflow run with a summary (FAILED if nothing was published). A pipeline that fails
  to publish is reported and the others still are; a failed end-to-end measurement is reported and leaves
  the published profile in place.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ipa_tasks.demo_pipelines import Log
from ipa_tasks.end_to_end_accuracy import MEASURED_FILE, measure_pipeline_accuracy
from ipa_tasks.profile_checks import check_profile
from ipa_tasks.profile_store import ProfileStore
from ipa_tasks.profiles import coerce_profile
from ipa_tasks.profiling_round import merged_profile
from ipa_tasks.settings import Settings, current_settings
from ipa_tasks.spec import load_spec, resolve_spec_path
from ipa_tasks.tracking import (
    finish_profiling_round,
    log_pipeline_accuracy,
    log_round_table,
)


def publish_round(
    outcomes: list[dict[str, Any]],
    *,
    accuracy_drift: float,
    latency_drift: float,
    log: Log,
) -> dict[str, dict[str, Any]]:
    """Publish every pipeline of the round; return per pipeline what happened (JSON-safe).

    ``outcomes`` are :class:`~ipa_tasks.profiling_round.VariantOutcome` dicts, each with its job under
    ``"job"`` (which names the pipeline, its spec, the round and the round's MLflow parent run).
    """
    settings = current_settings()
    store = ProfileStore(settings.profile_store)
    rounds = {o["job"]["pipeline"]: o["job"] for o in outcomes}
    summary = {}
    for name, info in rounds.items():
        mine = [o for o in outcomes if o["job"]["pipeline"] == name]
        result: dict[str, Any] = {
            status: [f"{o['stage']}/{o['variant']}" for o in mine if o["status"] == status]
            for status in ("passed", "quarantined", "missing")
        }
        result.update(published=False, drift_flagged=[], message="", end_to_end_configurations=0)
        tables = [pd.read_parquet(o["table"]) for o in mine if o["status"] == "passed"]
        parent = info["parent_run_id"]
        try:
            if tables:
                _publish_pipeline(
                    settings, name, info, tables, store, result, accuracy_drift, latency_drift, log
                )
            else:
                result["message"] = f"{name}: no variant table passed its checks; nothing published"
                log(result["message"])
        except Exception as exc:
            # One pipeline's failure must not leave the others unpublished or their runs RUNNING.
            result["message"] = f"{name}: publishing failed: {type(exc).__name__}: {exc}"
            log(result["message"])
        finish_profiling_round(
            settings.tracking_uri,
            parent,
            "FINISHED" if result["published"] else "FAILED",
            {
                "variants_passed": len(result["passed"]),
                "variants_quarantined": len(result["quarantined"]),
                "variants_missing": len(result["missing"]),
                "drift_flagged": len(result["drift_flagged"]),
                "outcome": "published" if result["published"] else "not published",
                "quarantined": result["quarantined"] or "none",
            },
        )
        summary[name] = result
    return summary


def _publish_pipeline(
    settings: Settings,
    name: str,
    info: dict[str, Any],
    tables: list[pd.DataFrame],
    store: ProfileStore,
    result: dict[str, Any],
    accuracy_drift: float,
    latency_drift: float,
    log: Log,
) -> None:
    spec = load_spec(resolve_spec_path(info["spec"]))
    new = coerce_profile(pd.concat(tables, ignore_index=True), f"round {info['round_id']} of {name}")
    drift = store.compare_with_current(name, new, accuracy_drift, latency_drift)
    for row in drift:
        if row["flagged"]:
            result["drift_flagged"].append(f"{row['stage']}/{row['variant']}")
            log(f"DRIFT {name}/{row['stage']}/{row['variant']}: {'; '.join(row['reasons'])}")
    if drift:
        frame = pd.DataFrame(drift).assign(reasons=lambda d: d["reasons"].map("; ".join))
        log_round_table(settings.tracking_uri, info["parent_run_id"], frame, "drift.csv")
    else:
        log(f"{name}: no variant of this round is in the published profile yet; drift not checked")

    merged = merged_profile(spec, store.current(name), tables)
    outcome = store.publish(name, merged, check_profile(merged), info["round_id"])
    result["published"] = outcome.published
    result["message"] = outcome.message
    log(outcome.message)
    if not outcome.published:
        return
    try:
        measured = measure_pipeline_accuracy(spec, merged, settings.variant_cache, log)
    except Exception as exc:
        # The profile is published and good; the end-to-end table is a report about it, so its failure is
        # said, not allowed to undo the round.
        log(f"{name}: end-to-end accuracy not measured: {type(exc).__name__}: {exc}")
        return
    if measured is None:
        return
    table, gap = measured
    table.to_frame().to_csv(store.current_path(name).parent / MEASURED_FILE, index=False)
    log_pipeline_accuracy(settings.tracking_uri, info["parent_run_id"], gap)
    result["end_to_end_configurations"] = len(gap)
    for row in gap.sort_values("measured", ascending=False).itertuples(index=False):
        configuration = " + ".join(str(getattr(row, stage)) for stage in spec.stage_names)
        log(f"  {configuration}: measured {row.measured:.3f}, product {row.product:.3f}, gap {row.gap:+.3f}")
