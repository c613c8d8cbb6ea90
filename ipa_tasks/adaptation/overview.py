"""What the Airflow UI's page of a pipeline shows, read from the adaptation loop's record: the configuration
that runs now and since when, the last decisions with their reasons, the load, forecast, cores and accuracy
over the last days, and where the MLflow runs are.

The day tables (:mod:`.decisions`) are the source: every tick writes one row, also when MLflow is down, so
the page is built from them alone and MLflow only adds links. An MLflow store that cannot be reached (or
that does not exist yet) is said on the page, never an error of the page.

Everything here is a function of the tables and the arguments (``today``, the tracking URI, the MLflow UI
address), so the plugin (``plugins/ipa_pipelines.py``) only wires it to HTTP. pandas and MLflow are imported
inside the functions: Airflow imports the plugin, and so this module's importers, in every task process.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ipa_tasks.adaptation.decisions import DAY_KIND, EXPERIMENT, day_table_path, read_decisions
from ipa_tasks.adaptation.state import adaptation_dir
from ipa_tasks.optimizer.plan import json_safe
from ipa_tasks.spec import shipped_spec_paths
from ipa_tasks.tracking import PROFILING_EXPERIMENT, ROUND_KIND, local_store, runs_filter, unreachable

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_DAYS = 2
"""Days of day tables a page reads (today and yesterday, UTC): a day boundary never empties the plots."""
DEFAULT_DECISIONS = 20
PROFILING_ROUNDS_LINKED = 3
MLFLOW_UI_VARIABLE = "IPA_MLFLOW_UI_URL"
"""The MLflow UI's address for people, when it differs from the tracking URI the tasks use (in Kubernetes
the tasks reach ``http://mlflow:5000``, a browser reaches an ingress)."""
MLFLOW_PROBE_TIMEOUT_S = 2.0
PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
"""The spec's pattern for names; a name is also a folder name under IPA_HOME, so nothing else is looked up."""
_DAY_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}\.csv$")
HOW_TO_RECORD = (
    'Run one tick with `make adapt ADAPT_CONF=\'{"pipelines": ["<pipeline>"]}\'`, or unpause the '
    "ipa_adapt DAG (every 30 s; scheduled runs adapt the Variable ipa_adapt_pipelines, else both demo "
    "pipelines)."
)


class UnknownPipelineError(LookupError):
    """Neither a shipped pipeline nor one with a record in IPA_HOME."""


@dataclass(frozen=True)
class StageRun:
    """What one stage runs, as the day tables write it: ``stage=variant/bB/cC/xR``."""

    stage: str
    variant: str
    batch_size: int
    cores: int
    replicas: int


@dataclass(frozen=True)
class RunningConfiguration:
    configuration: str
    """In the day tables' notation, ``stage=variant/bB/cC/xR; ...``."""
    stages: tuple[StageRun, ...]
    since: str
    """The first tick of the record it ran at, without a different or unknown configuration in between."""
    since_applied: bool
    """True: the tick at ``since`` applied it. False: it ran already when the record (of the days read)
    starts, or it was changed from outside the loop."""
    as_of: str
    """The last tick that knew it ran."""
    note: str = ""
    """Why the latest tick did not say what runs (then this is what the tick before knew)."""


@dataclass(frozen=True)
class Decision:
    time: str
    apply_status: str
    plan_status: str
    degraded: bool
    reason: str
    message: str
    configuration: str
    running: str
    observed_peak_rps: float | None
    forecast_rps: float | None
    forecaster: str
    total_cores: float | None
    accuracy: float | None
    steps: int
    steps_applied: int
    dry_run: bool


@dataclass(frozen=True)
class Series:
    """One value per tick, oldest first, for the plots (None where a tick had no load, forecast or plan)."""

    time: tuple[str, ...] = ()
    observed_peak_rps: tuple[float | None, ...] = ()
    forecast_rps: tuple[float | None, ...] = ()
    total_cores: tuple[float | None, ...] = ()
    accuracy: tuple[float | None, ...] = ()
    changed: tuple[bool, ...] = ()


@dataclass(frozen=True)
class MlflowRunLink:
    label: str
    run_id: str
    experiment: str
    experiment_id: str
    url: str | None
    """None when there is no MLflow UI address (a SQLite or file store)."""


@dataclass(frozen=True)
class MlflowLinks:
    tracking_uri: str
    ui_url: str | None
    runs: tuple[MlflowRunLink, ...] = ()
    error: str = ""
    """Why MLflow could not be asked (unreachable, failed); the page then shows the day tables only."""
    note: str = ""


@dataclass(frozen=True)
class PipelineOverview:
    pipeline: str
    days: tuple[str, ...]
    """The UTC days read, oldest first."""
    ticks: int
    """Rows in those days."""
    latest_day_recorded: str | None
    """The newest day table of the pipeline, also when it is older than ``days``."""
    running: RunningConfiguration | None
    decisions: tuple[Decision, ...]
    """Newest first."""
    series: Series
    mlflow: MlflowLinks
    how_to_record: str = ""
    """Set when the days read have no decision: how to get some."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN and infinity as null)."""
        return json_safe(asdict(self))


# --- which pipelines ---------------------------------------------------------------------------------------


def shipped_pipelines() -> list[str]:
    # A shipped spec's file is named after its pipeline (resolve_spec_path relies on it too), so the names
    # need no parsing of every spec; tests/adaptation/test_overview.py checks that they agree.
    return [path.stem for path in shipped_spec_paths()]


def recorded_days(home: Path, pipeline: str) -> list[str]:
    """The UTC days the pipeline has a decision table of, oldest first."""
    folder = adaptation_dir(home, pipeline) / "decisions"
    if not folder.is_dir():
        return []
    return sorted(path.stem for path in folder.iterdir() if _DAY_FILE.match(path.name))


def recorded_pipelines(home: Path) -> list[str]:
    """The pipelines with at least one decision table in IPA_HOME."""
    folder = Path(home) / "adaptation"
    if not folder.is_dir():
        return []
    return sorted(
        path.name
        for path in folder.iterdir()
        if PIPELINE_NAME.match(path.name) and recorded_days(home, path.name)
    )


def known_pipelines(home: Path) -> list[str]:
    return sorted({*recorded_pipelines(home), *shipped_pipelines()})


@dataclass(frozen=True)
class PipelineListing:
    name: str
    shipped: bool
    latest_day_recorded: str | None


def pipeline_listing(home: Path) -> list[PipelineListing]:
    """The index: the shipped pipelines and those with a record, by name."""
    shipped = set(shipped_pipelines())
    return [
        PipelineListing(name, name in shipped, (recorded_days(home, name) or [None])[-1])
        for name in known_pipelines(home)
    ]


def check_pipeline(home: Path, pipeline: str) -> None:
    """Raise :class:`UnknownPipelineError` for a name that is neither shipped nor recorded."""
    known = known_pipelines(home)
    if PIPELINE_NAME.match(pipeline) and pipeline in known:
        return
    raise UnknownPipelineError(
        f"no pipeline {pipeline!r}: it is not shipped and has no decision table under "
        f"{Path(home) / 'adaptation'}; known pipelines: {', '.join(known)}"
    )


# --- the day tables -----------------------------------------------------------------------------------------


def window_days(today: date, days: int) -> list[str]:
    """The ``days`` UTC days up to ``today``, oldest first."""
    return [(today - timedelta(days=back)).isoformat() for back in range(max(days, 1) - 1, -1, -1)]


def read_window(home: Path, pipeline: str, days: Iterable[str]) -> pd.DataFrame:
    """The day tables of ``days`` in one table, oldest tick first (no rows if there are none)."""
    import pandas as pd

    tables = [read_decisions(path) for day in days if (path := day_table_path(home, pipeline, day)).exists()]
    if not tables:
        return pd.DataFrame(columns=["time"])
    table = pd.concat(tables, ignore_index=True)
    # ISO times in UTC sort as text, and stable sorting keeps the written order of equal times.
    return table.sort_values("time", kind="stable").reset_index(drop=True)


def parse_configuration(text: str) -> tuple[StageRun, ...]:
    """``detect=d/b2/c1/x2; classify=c/b8/c1/x1`` as stages; unparseable parts are left out."""
    stages = []
    for part in text.split(";"):
        stage, _, rest = part.strip().partition("=")
        # Variant names could hold a slash, the three numbers cannot: split them off from the right.
        variant, *numbers = rest.rsplit("/", 3)
        try:
            batch, cores, replicas = (int(n[1:]) for n in numbers)
        except ValueError:
            continue
        if stage and variant:
            stages.append(StageRun(stage, variant, batch, cores, replicas))
    return tuple(stages)


def _same_configuration(a: str, b: str) -> bool:
    # The plan lists stages in the spec's order, the read-back in the target's: compare as sets.
    return set(parse_configuration(a)) == set(parse_configuration(b))


def configuration_after(row: pd.Series) -> str:
    """What ran after the tick ("" if the tick cannot tell): the plan when it was applied, what ran before
    when nothing was written (unchanged, dry run, not run) or when it was rolled back to exactly that.
    After an inconsistent apply only the message says what runs."""
    if row["apply_status"] == "applied":
        return str(row["configuration"])
    if row["apply_status"] == "inconsistent":
        return ""
    return str(row["running"])


def running_configuration(table: pd.DataFrame) -> RunningConfiguration | None:
    """What runs by the newest tick that knew it, and since when; None if no tick knew."""
    after = [configuration_after(row) for _, row in table.iterrows()]
    known = [i for i, text in enumerate(after) if parse_configuration(text)]
    if not known:
        return None
    latest = known[-1]
    first = latest
    # Back through the ticks that ran the same; an unknown one ("") ends the stretch like a different one.
    while first > 0 and _same_configuration(after[first - 1], after[latest]):
        first -= 1
    note = ""
    if latest != len(table) - 1:
        newest = table.iloc[-1]
        note = (
            f"the latest tick ({newest['time']}, {newest['apply_status']}) could not tell what runs"
            + (f": {newest['message']}" if newest["message"] else "")
            + f"; this is what runs by the tick of {table.iloc[latest]['time']}"
        )
    return RunningConfiguration(
        configuration=after[latest],
        stages=parse_configuration(after[latest]),
        since=str(table.iloc[first]["time"]),
        since_applied=table.iloc[first]["apply_status"] == "applied",
        as_of=str(table.iloc[latest]["time"]),
        note=note,
    )


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _count(value: Any) -> int:
    number = _number(value)
    return 0 if number is None else int(number)


def last_decisions(table: pd.DataFrame, limit: int = DEFAULT_DECISIONS) -> tuple[Decision, ...]:
    """The newest ``limit`` ticks, newest first."""
    newest = table.iloc[::-1].head(max(limit, 0))
    return tuple(
        Decision(
            time=str(row["time"]),
            apply_status=str(row.get("apply_status", "")),
            plan_status=str(row.get("plan_status", "")),
            degraded=bool(_count(row.get("degraded"))),
            reason=str(row.get("reason", "")),
            message=str(row.get("message", "")),
            configuration=str(row.get("configuration", "")),
            running=str(row.get("running", "")),
            observed_peak_rps=_number(row.get("observed_peak_rps")),
            forecast_rps=_number(row.get("forecast_rps")),
            forecaster=str(row.get("forecaster", "")),
            total_cores=_number(row.get("total_cores")),
            accuracy=_number(row.get("accuracy")),
            steps=_count(row.get("steps")),
            steps_applied=_count(row.get("steps_applied")),
            dry_run=bool(_count(row.get("dry_run"))),
        )
        for _, row in newest.iterrows()
    )


def series_of(table: pd.DataFrame) -> Series:
    def column(name: str) -> tuple[float | None, ...]:
        values = table[name] if name in table else [None] * len(table)
        return tuple(_number(v) for v in values)

    return Series(
        time=tuple(str(t) for t in table["time"]),
        observed_peak_rps=column("observed_peak_rps"),
        forecast_rps=column("forecast_rps"),
        total_cores=column("total_cores"),
        accuracy=column("accuracy"),
        changed=tuple(bool(v) for v in column("changed")),
    )


# --- MLflow ----------------------------------------------------------------------------------------------


def mlflow_ui_base(tracking_uri: str, override: str = "") -> str | None:
    """The MLflow UI's address for links: the override, else an http(s) tracking URI; None for a SQLite or
    file store, which has no UI address (``make mlflow`` serves one on its own port)."""
    if override.strip():
        return override.strip().rstrip("/")
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return tracking_uri.rstrip("/")
    return None


def run_url(ui_base: str | None, experiment_id: str, run_id: str) -> str | None:
    return None if ui_base is None else f"{ui_base}/#/experiments/{experiment_id}/runs/{run_id}"


def mlflow_links(tracking_uri: str, pipeline: str, days: int, ui_override: str = "") -> MlflowLinks:
    """The pipeline's newest adaptation-day runs (up to ``days``) and profiling rounds, with UI links.
    Never raises: what went wrong is in ``error``."""
    ui = mlflow_ui_base(tracking_uri, ui_override)
    links = MlflowLinks(tracking_uri, ui, note="" if ui else _no_ui_note(tracking_uri))
    store = local_store(tracking_uri)
    if store is not None and not store.exists():
        # Asking would create an empty store (and its folder) as a side effect of viewing a page.
        return replace(links, note=f"no MLflow store yet at {store}: the first recorded tick creates it")
    if store is None and (why := unreachable(tracking_uri, MLFLOW_PROBE_TIMEOUT_S)):
        return replace(links, error=f"MLflow at {tracking_uri} could not be reached ({why})")
    try:
        from ipa_tasks.tracking import mlflow_client

        client = mlflow_client(tracking_uri)
        days_runs = _runs(client, ui, EXPERIMENT, runs_filter(DAY_KIND, pipeline), days, _day_label)
        rounds = runs_filter(ROUND_KIND, pipeline)
        round_runs = _runs(client, ui, PROFILING_EXPERIMENT, rounds, PROFILING_ROUNDS_LINKED, _round_label)
    except Exception as exc:  # a broken or foreign store must not take the page down: say it instead
        why = f"{type(exc).__name__}: {exc}"[:400]
        return replace(links, error=f"MLflow at {tracking_uri} could not be asked: {why}")
    return replace(links, runs=(*days_runs, *round_runs))


def _no_ui_note(tracking_uri: str) -> str:
    return (
        f"the tracking store {tracking_uri} has no MLflow UI address: run `make mlflow` and open "
        f"http://127.0.0.1:5000, or set {MLFLOW_UI_VARIABLE} for links"
    )


def _day_label(run: Any) -> str:
    return f"adaptation on {run.data.tags.get('ipa.date', '?')} (UTC)"


def _round_label(run: Any) -> str:
    return f"profiling round {run.info.run_name} ({run.info.status.lower()})"


def _runs(
    client: Any, ui: str | None, experiment: str, where: str, limit: int, label: Callable[[Any], str]
) -> list[MlflowRunLink]:
    """The experiment's newest ``limit`` runs that match ``where``; none if the experiment does not exist."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id], where, order_by=["attributes.start_time DESC"], max_results=limit
    )
    return [
        MlflowRunLink(
            label(run),
            run.info.run_id,
            experiment,
            found.experiment_id,
            run_url(ui, found.experiment_id, run.info.run_id),
        )
        for run in runs
    ]


# --- the page -----------------------------------------------------------------------------------------------


def pipeline_overview(
    home: Path,
    tracking_uri: str,
    pipeline: str,
    *,
    today: date,
    days: int = DEFAULT_DAYS,
    limit: int = DEFAULT_DECISIONS,
    ui_override: str = "",
) -> PipelineOverview:
    """The page of one pipeline. Raises :class:`UnknownPipelineError` for a pipeline that is neither shipped
    nor recorded."""
    check_pipeline(home, pipeline)
    window = window_days(today, days)
    table = read_window(home, pipeline, window)
    recorded = recorded_days(home, pipeline)
    empty = table.empty
    return PipelineOverview(
        pipeline=pipeline,
        days=tuple(window),
        ticks=len(table),
        latest_day_recorded=recorded[-1] if recorded else None,
        running=None if empty else running_configuration(table),
        decisions=() if empty else last_decisions(table, limit),
        series=Series() if empty else series_of(table),
        mlflow=mlflow_links(tracking_uri, pipeline, days, ui_override),
        how_to_record=HOW_TO_RECORD.replace("<pipeline>", pipeline) if empty else "",
    )
