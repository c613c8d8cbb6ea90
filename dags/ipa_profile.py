"""
### Profile every model variant of the demo pipelines, check the tables, publish the profiles

One round per trigger (and every week, to catch drift): for each selected variant of each pipeline

1. **build** the variant if it is not in the cache yet (trained or loaded, registered in the MLflow model
   registry as `<pipeline>.<variant>` with its held-out accuracy);
2. **profile** it with `python -m profiling_jobs.profile_variant`: as a local process, or as a Kubernetes pod
   (`KubernetesPodOperator`) when the `ipa_kubernetes` connection exists (param `runner`);
3. **check** its table with the Great Expectations suite: a failing table is quarantined with its report
   (profile store and MLflow), never published; a passing one gets its latency model fitted and a child run
   in MLflow (metrics per batch size, the table, a latency/throughput plot);
4. **publish** the merged profile of each pipeline (new tables replace the same variants' rows, the others
   stay), flag drift against the last published profile, measure the end-to-end accuracy of every
   configuration next to the product of stage accuracies (T1), and emit the `ipa_profiles` asset.

MLflow: experiment `ipa-profiling`, one parent run per pipeline and round, one child run per variant.
Params: leave `stages`, `variants`, `batch_sizes` and `cores` empty for "all" / "the spec's".
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import Asset, Param, dag, get_current_context, task

from ipa_tasks.assets import PROFILES_ASSET_NAME, PROFILES_ASSET_URI
from ipa_tasks.kubernetes_connection import KUBERNETES_CONNECTION
from ipa_tasks.profiling_pod import ProfilingPodOperator
from ipa_tasks.tracking import PROFILING_EXPERIMENT

DAG_ID = Path(__file__).stem
EXPERIMENT = PROFILING_EXPERIMENT
PROFILES = Asset(name=PROFILES_ASSET_NAME, uri=PROFILES_ASSET_URI)
"""Emitted after a round published at least one pipeline's profile; its extra names the pipelines."""
DEMO_PIPELINES = ["digit-strips", "language-routing"]

_names = {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True}
_sizes = {"type": "array", "items": {"type": "integer", "minimum": 1}, "uniqueItems": True}


@dag(
    dag_id=DAG_ID,
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["ipa", "profiling"],
    params={
        "pipelines": Param(DEMO_PIPELINES, **_names, minItems=1, description="spec names or spec files"),
        "stages": Param([], **_names, description="only these stages (one pipeline); empty: all"),
        "variants": Param([], **_names, description="only these variants (one pipeline); empty: all"),
        "batch_sizes": Param([], **_sizes, description="batch sizes to measure; empty: each stage's"),
        "cores": Param([], **_sizes, description="threads per replica to measure; empty: each stage's"),
        "repetitions": Param(30, type="integer", minimum=20, maximum=1000, description="timed batches"),
        "warmup": Param(5, type="integer", minimum=0, maximum=100, description="untimed batches first"),
        "runner": Param(
            "auto",
            enum=["auto", "local", "kubernetes"],
            description="auto: a pod when the ipa_kubernetes connection exists, else a local process",
        ),
        "rebuild": Param(False, type="boolean", description="build the variants again even if cached"),
        "accuracy_drift": Param(0.02, type="number", minimum=0, description="flag |accuracy change| above"),
        "latency_drift": Param(0.20, type="number", minimum=0, description="flag |p50 change| above (ratio)"),
    },
)
def ipa_profile() -> None:
    @task
    def start_round() -> list[dict]:
        """Check the params against the specs, plan one job per variant, open the MLflow parent runs."""
        from ipa_tasks.profiling_round import open_round
        from ipa_tasks.settings import current_settings

        context = get_current_context()
        jobs = open_round(current_settings(), context["params"], context["run_id"], EXPERIMENT, print)
        return [job.to_dict() for job in jobs]

    @task(map_index_template="{{ job_label }}")
    def build_variant(job: dict) -> dict:
        """Build a demo variant into the cache unless it is there; register the build in MLflow."""
        from ipa_tasks.model_registry import build_and_register
        from ipa_tasks.settings import current_settings
        from ipa_tasks.variant_cache import DEMO_PIPELINE_MODULES

        context = get_current_context()
        context["job_label"] = f"{job['pipeline']}/{job['stage']}/{job['variant']}"
        if job["pipeline"] in DEMO_PIPELINE_MODULES:
            rebuild = bool(context["params"]["rebuild"])
            build_and_register(
                current_settings(), job["pipeline"], job["stage"], job["variant"], print, rebuild=rebuild
            )
        else:
            print(f"{job['pipeline']} is not a demo pipeline: its variants load themselves, nothing to build")
        return job

    @task.branch
    def choose_runner() -> str:
        """A pod when asked for, or when the ipa_kubernetes connection exists and nothing else was asked."""
        from ipa_tasks.kubernetes_connection import kubernetes_connection_exists

        runner = get_current_context()["params"]["runner"]
        if runner == "auto":
            runner = "kubernetes" if kubernetes_connection_exists() else "local"
        if runner == "kubernetes":
            from ipa_tasks.profiling_pod import require_shared_home

            require_shared_home()
        print(f"profiling jobs run as {'Kubernetes pods' if runner == 'kubernetes' else 'local processes'}")
        return "profile_in_pod" if runner == "kubernetes" else "profile_locally"

    # One at a time: two jobs timing on the same cores would each measure the other's load.
    @task(map_index_template="{{ job_label }}", max_active_tis_per_dag=1)
    def profile_locally(job: dict) -> str:
        """The profiling job as a child process of the task, its progress copied to the task log."""
        from ipa_tasks.profiling_job import ProfilingJob, run_locally

        profiling_job = ProfilingJob.from_dict(job)
        get_current_context()["job_label"] = f"{profiling_job.pipeline}/{profiling_job.label}"
        print(run_locally(profiling_job), end="")
        return profiling_job.out

    @task(trigger_rule="all_done", map_index_template="{{ job_label }}")
    def check_variant(job: dict) -> dict:
        """GX suite on the variant's table; quarantine it or fit and log it as an MLflow child run."""
        from ipa_tasks.profiling_job import ProfilingJob
        from ipa_tasks.profiling_round import check_and_log
        from ipa_tasks.settings import current_settings

        profiling_job = ProfilingJob.from_dict(job)
        get_current_context()["job_label"] = f"{profiling_job.pipeline}/{profiling_job.label}"
        return {**check_and_log(current_settings(), profiling_job, print).to_dict(), "job": job}

    @task(outlets=[PROFILES])
    def publish(outcomes: list[dict]) -> dict:
        """Merge, drift-check, publish and measure each pipeline; emit the asset if any was published."""
        from ipa_tasks.profiling_publish import publish_round

        context = get_current_context()
        params = context["params"]
        summary = publish_round(
            list(outcomes),
            accuracy_drift=params["accuracy_drift"],
            latency_drift=params["latency_drift"],
            log=print,
        )
        published = [name for name, result in summary.items() if result["published"]]
        if not published:
            raise RuntimeError(f"no pipeline published a profile in this round: {summary}")
        context["outlet_events"][PROFILES].extra = {"pipelines": published, "round_id": context["run_id"]}
        return summary

    jobs = start_round()
    built = build_variant.expand(job=jobs)
    runner = choose_runner()
    built >> runner
    local = profile_locally.expand(job=built)
    in_pod = ProfilingPodOperator.partial(
        task_id="profile_in_pod",
        map_index_template="{{ task.job['pipeline'] }}/{{ task.job['stage'] }}/{{ task.job['variant'] }}",
        kubernetes_conn_id=KUBERNETES_CONNECTION,
        image="{{ var.value.get('ipa_image', 'ipa-airflow:0.1.0') }}",
        get_logs=True,
        on_finish_action="delete_pod",
        startup_timeout_seconds=300,
    ).expand(job=built)
    runner >> [local, in_pod]
    checked = check_variant.expand(job=jobs)
    [local, in_pod] >> checked
    publish(checked)


ipa_profile()
