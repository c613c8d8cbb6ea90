"""RateFileSource reads the local router's per-second file: gaps, staleness, bad files, and only its tail."""

from __future__ import annotations

import numpy as np
import pytest

from ipa_tasks.monitoring import RateFileSource, SourceUnavailable, append_rates

T = 1_764_000_000  # floor(NOW)
NOW = T + 0.3  # the window of 5 s is the seconds T-5 .. T-1
nan = np.nan


@pytest.fixture
def path(tmp_path):
    return tmp_path / "serving" / "video" / "requests.csv"


def test_append_rates_writes_the_header_once_and_rows_oldest_first(path):
    append_rates(path, {T - 1: 4, T - 2: 0})
    append_rates(path, {T: 7})
    assert path.read_text() == f"timestamp,requests\n{T - 2},0\n{T - 1},4\n{T},7\n"
    with pytest.raises(ValueError, match="non-negative count"):
        append_rates(path, {T + 1: -1})


def test_the_window_is_read_with_a_second_without_a_row_as_a_gap(path):
    append_rates(path, {t: t - T + 10 for t in range(T - 8, T) if t != T - 3})
    np.testing.assert_array_equal(RateFileSource(path).rates(5, NOW), [5, 6, nan, 8, 9])


def test_a_row_still_being_written_is_skipped_and_the_later_of_two_rows_wins(path):
    append_rates(path, {t: 1 for t in range(T - 5, T - 1)})
    with path.open("a") as file:
        file.write(f"{T - 4},9\n{T - 1},12")  # the router is mid-write: "12" may become "120"
    np.testing.assert_array_equal(RateFileSource(path).rates(5, NOW), [1, 9, 1, 1, nan])


def test_a_file_whose_newest_row_is_old_is_stale(path):
    append_rates(path, {t: 3 for t in range(T - 100, T - 20)})
    with pytest.raises(
        SourceUnavailable,
        match=r"is stale: its newest row is 21 s old \(more than 10 s; the local router may have stopped\)",
    ):
        RateFileSource(path).rates(120, NOW)
    lenient = RateFileSource(path, stale_after_s=30).rates(120, NOW)
    np.testing.assert_array_equal(lenient, [nan] * 20 + [3] * 80 + [nan] * 20)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, r"requests\.csv does not exist \(the local serving runtime may not be running\)"),
        ("", r"the first line is 'empty', expected 'timestamp,requests'"),
        ("second,requests\n1,2\n", r"the first line is 'second,requests', expected 'timestamp,requests'"),
        ("timestamp,requests\n", r"has no rows yet"),
        (f"timestamp,requests\n{T - 3},1\n{T - 2},lots\n{T - 1},1\n", rf"malformed row '{T - 2},lots'"),
        (f"timestamp,requests\n{T - 2},-1\n", rf"malformed row '{T - 2},-1'"),
        (f"timestamp,requests\n{T - 2},1,extra\n", rf"malformed row '{T - 2},1,extra'"),
        (f"timestamp,requests\n{T - 2}.5,1\n", r"malformed row"),
    ],
)
def test_a_missing_or_bad_file_is_unavailable_and_says_why(path, content, match):
    if content is not None:
        path.parent.mkdir(parents=True)
        path.write_text(content)
    with pytest.raises(SourceUnavailable, match=match):
        RateFileSource(path).rates(5, NOW)


def test_a_directory_in_place_of_the_file_is_unavailable(path):
    path.mkdir(parents=True)
    with pytest.raises(SourceUnavailable, match=r"cannot read .*requests\.csv"):
        RateFileSource(path).rates(5, NOW)


def test_a_large_file_is_read_from_its_tail_only(path):
    # 200 000 rows (a bit over two days) with a broken row near the start that a full parse would trip on.
    first = T - 200_000
    rows = [f"{t},{t % 97}\n" for t in range(first, T)]
    rows[10] = "garbage\n"
    path.parent.mkdir(parents=True)
    path.write_text("timestamp,requests\n" + "".join(rows))
    rates = RateFileSource(path).rates(120, NOW)
    np.testing.assert_array_equal(rates, [t % 97 for t in range(T - 120, T)])


def test_a_window_longer_than_the_first_read_is_read_whole(path):
    # Zero-padded counts make rows ~50 bytes, so 2000 of them do not fit the first 64 KiB read.
    path.parent.mkdir(parents=True)
    rows = "".join(f"{t},{t % 13:040d}\n" for t in range(T - 3000, T))
    path.write_text("timestamp,requests\n" + rows)
    rates = RateFileSource(path).rates(2000, NOW)
    np.testing.assert_array_equal(rates, [t % 13 for t in range(T - 2000, T)])


def test_the_name_says_local_and_the_path(path):
    assert RateFileSource(path).name == f"local {path}"
