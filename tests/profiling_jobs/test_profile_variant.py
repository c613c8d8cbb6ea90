"""The profiling job: its statistics on known samples, and real runs on digit classifiers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ipa_tasks.profile_checks import check_profile
from ipa_tasks.profiles import PROFILE_COLUMNS, read_profile
from profiling_jobs.profile_variant import batches, latency_percentiles, main, throughput_rps
from tests.profiling_jobs.digits_variant import logistic

REPETITIONS = 10
SPEC = """\
name: digits
sla_s: 1.0
stages:
  - name: classify
    batch_sizes: [1, 4]
    cores: [1, 2]
    variants:
      - name: logistic
        model: {kind: python, uri: "tests.profiling_jobs.digits_variant:logistic"}
      - name: knn
        model: {kind: python, uri: "tests.profiling_jobs.digits_variant:nearest_neighbors"}
      - name: published
        model: {kind: reference, uri: "yolov5n"}
"""


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "digits.yaml"
    path.write_text(SPEC, encoding="utf-8")
    return path


def run(spec_file: Path, out: Path, *extra: str, variant: str = "logistic") -> int:
    return main(
        [
            "--spec", str(spec_file), "--stage", "classify", "--variant", variant,
            "--repetitions", str(REPETITIONS), "--warmup", "3", "--out", str(out), *extra,
        ]
    )  # fmt: skip


def test_latency_percentiles_match_numpy() -> None:
    samples = [float(x) for x in range(1, 101)]
    assert latency_percentiles(samples) == pytest.approx(tuple(np.percentile(samples, [50, 95, 99])))
    assert latency_percentiles(samples)[0] == pytest.approx(50.5)
    assert latency_percentiles([0.25]) == (0.25, 0.25, 0.25)
    with pytest.raises(ValueError):
        latency_percentiles([])


def test_throughput_is_batch_over_median_latency() -> None:
    assert throughput_rps(8, [0.1, 0.3]) == pytest.approx(40.0)
    assert throughput_rps(10, [0.1, 0.1, 5.0]) == pytest.approx(100.0), "one preempted batch must not count"
    assert throughput_rps(1, [0.5]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        throughput_rps(1, [])


def test_batches_cycle_through_the_items() -> None:
    assert batches("abcde", 2, 4) == [["a", "b"], ["c", "d"], ["e", "a"], ["b", "c"]]
    assert batches([1, 2], 5, 1) == [[1, 2, 1, 2, 1]]
    assert batches([1, 2], 3, 0) == []
    built = batches(list(range(7)), 3, 5)
    assert [len(b) for b in built] == [3] * 5
    assert [x for b in built for x in b] == [i % 7 for i in range(15)]
    with pytest.raises(ValueError):
        batches([], 1, 1)
    with pytest.raises(ValueError):
        batches([1], 0, 1)


def test_cli_writes_one_measured_row_per_batch_and_cores(
    spec_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rows.csv"
    assert run(spec_file, out) == 0

    table = read_profile(out)
    assert list(table.columns) == list(PROFILE_COLUMNS)
    assert sorted(zip(table["batch_size"], table["cores"], strict=True)) == [(1, 1), (1, 2), (4, 1), (4, 2)]
    assert (table["pipeline"] == "digits").all()
    assert (table[["stage", "variant"]] == ["classify", "logistic"]).all().all()
    assert (table["source"] == "measured").all()
    assert (table["repetitions"] == REPETITIONS).all()
    assert (table["latency_p50_s"] <= table["latency_p95_s"]).all()
    assert (table["latency_p95_s"] <= table["latency_p99_s"]).all()
    assert (table["memory_mb"] > 10).all()
    assert table["profiled_at"].str.endswith("+00:00").all()

    variant = logistic()
    inputs, labels = variant.held_out()
    expected = float((variant.model.predict(inputs) == labels).mean())
    assert expected > 0.9
    assert table["accuracy"].to_numpy() == pytest.approx(expected, abs=1e-6)

    progress = capsys.readouterr().err
    for cores in (1, 2):
        for batch in (1, 4):
            assert f"cores={cores} batch={batch}:" in progress


def test_cli_options_override_the_stage_defaults(spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows.parquet"
    assert run(spec_file, out, "--batch-sizes", "2,8,16", "--cores", "1") == 0
    table = read_profile(out)
    assert table["batch_size"].tolist() == [2, 8, 16]
    assert set(table["cores"]) == {1}


def test_profile_passes_the_great_expectations_suite(spec_file: Path, tmp_path: Path) -> None:
    # Nearest neighbours, not logistic regression: its cost grows with the batch, so the suite's rule that
    # latency does not fall as the batch grows is tested against a real trend instead of timing noise.
    # One core only: two threads on a shared 2-core test machine get preempted, and the resulting outliers
    # pull the mean-based throughput far from the median latency the suite compares it with.
    out = tmp_path / "rows.csv"
    assert run(spec_file, out, "--batch-sizes", "1,256", "--cores", "1", variant="knn") == 0
    result = check_profile(read_profile(out), min_repetitions=REPETITIONS)
    assert result.success, result.summary()


@pytest.mark.parametrize(
    ("stage", "variant", "message"),
    [
        ("detect", "logistic", "no stage 'detect'"),
        ("classify", "svm", "no variant 'svm'"),
        ("classify", "published", "only kind 'python'"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    spec_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    stage: str,
    variant: str,
    message: str,
) -> None:
    out = tmp_path / "rows.csv"
    argv = ["--spec", str(spec_file), "--stage", stage, "--variant", variant, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_spec_or_output_exits_2(
    spec_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = ["--spec", str(tmp_path / "nope.yaml"), "--stage", "classify", "--variant", "logistic"]
    assert main([*missing, "--out", str(tmp_path / "rows.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert run(spec_file, tmp_path / "rows.json") == 2
    assert ".csv or .parquet" in capsys.readouterr().err


def test_bad_option_values_exit_2(spec_file: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        run(spec_file, tmp_path / "rows.csv", "--batch-sizes", "1,0")
    assert raised.value.code == 2


def test_help_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "profiling_jobs.profile_variant", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert "--batch-sizes" in result.stdout
    assert "--repetitions" in result.stdout


def test_pinned_threads_limits_blas_and_torch_then_restores_them() -> None:
    import torch
    from threadpoolctl import threadpool_info

    from profiling_jobs.profile_variant import pinned_threads

    torch.set_num_threads(2)
    with pinned_threads(1):
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == 2


PEAK_PROBE = """
import numpy as np
from profiling_jobs.profile_variant import peak_memory_mib, reset_peak_memory
if not reset_peak_memory():
    print("unsupported")
    raise SystemExit
block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
with_block = peak_memory_mib()
del block
reset_peak_memory()
print(with_block, peak_memory_mib())
"""


def test_peak_memory_is_per_point_after_a_reset() -> None:
    # A fresh process: in the test session's own, freed memory from earlier tests can be reused by the
    # allocator without raising the resident size at all.
    done = subprocess.run([sys.executable, "-c", PEAK_PROBE], capture_output=True, text=True, check=True)
    if done.stdout.strip() == "unsupported":
        pytest.skip("this kernel cannot reset the peak (no /proc/self/clear_refs)")
    with_block, after_reset = map(float, done.stdout.split())
    assert after_reset < with_block - 48, "the peak must forget the freed 64 MiB after a reset"


def test_warmup_batches_are_left_out_of_the_statistics(spec_file: Path, tmp_path: Path, monkeypatch) -> None:
    import profiling_jobs.profile_variant as job

    calls: list[int] = []

    def cold_then_fast(predict, runs):
        calls.append(len(runs))
        # The three warm-up batches are "cold" (10 s each); every timed one takes 1 ms.
        return [10.0] * 3 + [0.001] * (len(runs) - 3)

    monkeypatch.setattr(job, "time_batches", cold_then_fast)
    assert run(spec_file, tmp_path / "rows.csv", "--batch-sizes", "1", "--cores", "1") == 0
    assert calls == [3 + REPETITIONS]
    (row,) = read_profile(tmp_path / "rows.csv").to_dict("records")
    assert row["latency_p99_s"] == pytest.approx(0.001) and row["repetitions"] == REPETITIONS
