"""Every DAG file imports cleanly and follows the project's conventions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DAG_FILES = sorted(Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).glob("*.py"))


def test_every_dag_file_imports_without_errors(dag_bag):
    assert dag_bag.import_errors == {}
    assert {Path(f).stem for f in DAG_FILES} <= set(dag_bag.dag_ids)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_dag_id_is_the_file_stem_and_the_docstring_is_its_doc(dag_bag, path: Path):
    dag = dag_bag.dags.get(path.stem)
    assert dag is not None, f"{path.name} defines no DAG named {path.stem!r}"
    assert dag.catchup is False
    assert dag.doc_md and dag.doc_md.strip()
    source = path.read_text()
    assert dag.doc_md.strip() in source


def test_ipa_profile_maps_one_task_per_variant_and_validates_its_params(dag_bag):
    from airflow.sdk.definitions.mappedoperator import MappedOperator
    from airflow.sdk.exceptions import ParamValidationError

    dag = dag_bag.dags["ipa_profile"]
    assert dag.timetable.expression == "0 0 * * 0"  # @weekly
    assert dag.max_active_runs == 1
    for task_id in ("build_variant", "profile_locally", "profile_in_pod", "check_variant"):
        assert isinstance(dag.get_task(task_id), MappedOperator), task_id
    assert dag.get_task("profile_in_pod").operator_class.__name__ == "ProfilingPodOperator"
    assert [o.name for o in dag.get_task("publish").outlets] == ["ipa_profiles"]
    params = dag.params
    assert set(params) >= {"pipelines", "stages", "variants", "batch_sizes", "cores", "repetitions", "runner"}
    # What the trigger form would refuse before a run starts.
    for name, bad in (("repetitions", 5), ("runner", "docker"), ("batch_sizes", [0]), ("pipelines", [])):
        with pytest.raises(ParamValidationError):
            params.get_param(name).resolve(bad)
    assert params.get_param("batch_sizes").resolve([1, 8]) == [1, 8]
