"""Spec loading: a broken spec names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ipa_tasks.spec import SpecError, load_spec, resolve_spec_path

GOOD = {
    "name": "toy",
    "sla_s": 2.0,
    "stages": [
        {
            "name": "detect",
            "variants": [
                {"name": "small", "model": {"kind": "reference", "uri": "t/small"}, "accuracy": 0.7}
            ],
            "batch_sizes": [1, 2],
            "cores": [1],
        },
        {
            "name": "classify",
            "variants": [{"name": "s", "model": {"kind": "reference", "uri": "t/s"}, "accuracy": 0.8}],
        },
    ],
}


def write(tmp_path: Path, data, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def broken(**changes):
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in changes.items():
        target = data
        *parents, leaf = dotted.split("/")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(leaf) if leaf.isdigit() else leaf] = value
    return data


def test_good_spec_loads_with_defaults(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.stage_names == ["detect", "classify"]
    assert spec.stage("classify").batch_sizes == [1]
    assert spec.latency_quantile == "p99" and spec.accuracy_method == "product"
    assert spec.source_path == (tmp_path / "spec.yaml").resolve()


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"sla_s": -1}, "sla_s", "greater than 0"),
        ({"stages/0/batch_sizes/1": 0}, "stages[0].batch_sizes[1]", "greater than 0"),
        ({"stages/1/variants/0/accuracy": 1.5}, "stages[1].variants[0].accuracy", "less than or equal to 1"),
        (
            {"stages/0/variants/0/model": {"kind": "torrent", "uri": "x"}},
            "stages[0].variants[0].model.kind",
            "Input should be",
        ),
        ({"stages/0/colour": "red"}, "stages[0].colour", "Extra inputs"),
        ({"stages/1/name": "detect"}, "stages[1].name", "duplicate stage name"),
        ({"stages/0/batch_sizes": [1, 1]}, "stages[0].batch_sizes", "unique"),
        ({"stages/0/replicas": {"min": 5, "max": 2}}, "stages[0].replicas", "larger than max"),
        ({"baselines": {"fa2_low": {"detect": "huge"}}}, "baselines.fa2_low.detect", "no variant 'huge'"),
        ({"baselines": {"rim_replicas": {"nope": 2}}}, "baselines.rim_replicas.nope", "unknown stage"),
        ({"stages/0/variants/0/accuracy": 0.0}, "stages[0].variants[0].accuracy", "> 0 when accuracy_method"),
        ({"name": "Bad Name"}, "name", "pattern"),
    ],
)
def test_error_names_file_and_field(tmp_path, changes, field, words):
    path = write(tmp_path, broken(**changes), "pipe.yaml")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert f"pipe.yaml: {field}:" in message
    assert words in message


def test_missing_field_is_named(tmp_path):
    data = dict(GOOD)
    del data["sla_s"]
    with pytest.raises(SpecError, match=r"spec\.yaml: sla_s: Field required"):
        load_spec(write(tmp_path, data))


def test_invalid_yaml_names_line(tmp_path):
    with pytest.raises(SpecError, match=r"bad\.yaml: line 3, column 1: invalid YAML"):
        load_spec(write(tmp_path, "name: x\nstages: [\n", "bad.yaml"))


def test_non_mapping_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "absent.yaml")


def test_every_error_is_reported_at_once(tmp_path):
    data = broken(**{"sla_s": 0, "stages/0/cores/0": -2})
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, data))
    assert "sla_s:" in str(err.value) and "stages[0].cores[0]:" in str(err.value)


def test_resolve_unknown_shipped_name_lists_the_known_ones():
    with pytest.raises(SpecError, match="no shipped pipeline"):
        resolve_spec_path("no-such-pipeline")
