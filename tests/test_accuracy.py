"""Pipeline accuracy definitions."""

from __future__ import annotations

import pytest

from ipa_tasks.accuracy import (
    MeasuredAccuracyTable,
    normalized_sum_accuracy,
    pipeline_accuracy,
    product_accuracy,
    rank_normalized,
)

STAGES = [{"yolov5n": 0.457, "yolov5s": 0.568}, {"resnet18": 0.6975, "resnet101": 0.7737}]


def test_product_matches_the_papers_pas():
    # ipa.md 2.1: yolov5n x resnet18 = 45.7 * 69.75 / 100 = 31.9 (PAS x 100)
    assert product_accuracy([0.457, 0.6975]) * 100 == pytest.approx(31.87, abs=0.01)
    assert pipeline_accuracy("product", ("yolov5s", "resnet101"), STAGES) * 100 == pytest.approx(
        43.95, abs=0.01
    )


def test_rank_normalisation_discards_gaps_and_handles_ties_and_singletons():
    assert rank_normalized({"a": 0.1, "b": 0.5, "c": 0.51}) == {"a": 0.0, "b": 0.5, "c": 1.0}
    assert rank_normalized({"only": 0.3}) == {"only": 1.0}
    tied = rank_normalized({"a": 0.5, "b": 0.5, "c": 0.9})
    assert tied["a"] == tied["b"] == 0.0 and tied["c"] == 1.0


def test_normalized_sum_is_ipas_original_objective():
    assert normalized_sum_accuracy(("yolov5s", "resnet18"), STAGES) == 1.0
    assert pipeline_accuracy("sum", ("yolov5s", "resnet18"), STAGES) == pytest.approx(0.568 + 0.6975)


def test_measured_table_shows_the_correlation_gap():
    table = MeasuredAccuracyTable("video", ("crop", "classification"))
    table.record(("yolov5n", "resnet18"), 0.40)
    table.record(("yolov5s", "resnet101"), 0.40)
    gap = table.correlation_gap(STAGES).set_index(["crop", "classification"])
    assert gap.loc[("yolov5n", "resnet18"), "gap"] == pytest.approx(0.40 - 0.457 * 0.6975)
    assert gap.loc[("yolov5s", "resnet101"), "gap"] < 0
    assert table.lookup(("yolov5n", "resnet18")) == 0.40
    assert table.lookup(("yolov5x", "resnet18")) is None
    again = MeasuredAccuracyTable.from_frame("video", ("crop", "classification"), table.to_frame())
    assert again.rows == table.rows


def test_measured_table_rejects_bad_rows():
    table = MeasuredAccuracyTable("video", ("crop", "classification"))
    with pytest.raises(ValueError, match="names 2 variants"):
        table.record(("yolov5n",), 0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        table.record(("yolov5n", "resnet18"), 1.5)
