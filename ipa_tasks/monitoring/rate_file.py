"""The request rate from the local serving runtime's own file, for running without a cluster.

The contract with the local router: a CSV file with the header ``timestamp,requests`` and one row per
whole unix second, the number of requests the router received in that second (zeros included), appended as
each second ends (:func:`append_rates`). A second of the window without a row is a gap (NaN). The file
grows all day, so only its tail is read: enough bytes for the window, more only if rows turn out longer.
A last line without its newline is still being written and is skipped. The file missing, unreadable,
malformed near its end, or with its newest row more than ``stale_after_s`` old (the router has stopped) is
:class:`~ipa_tasks.monitoring.source.SourceUnavailable`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ipa_tasks.monitoring.source import SourceUnavailable, window_seconds

HEADER = "timestamp,requests"
# Reading this much covers a two-minute window many times over at no measurable cost; a window whose rows
# do not fit doubles it until they do.
_TAIL_BYTES = 64 * 1024
_BYTES_PER_ROW = 32


class RateFileSource:
    """CSV with header ``timestamp,requests``: one row per whole unix second, the number of requests the
    local router received in that second (zeros included). Seconds without a row inside the window are NaN;
    the file missing, unreadable, malformed, or with its newest row older than ``stale_after_s`` before
    ``now`` raises SourceUnavailable. Only the tail of the file is read."""

    def __init__(self, path: Path, *, stale_after_s: float = 10.0) -> None:
        self.path = Path(path)
        self.stale_after_s = stale_after_s
        self.name = f"local {self.path}"

    def rates(self, seconds: int, now: float) -> np.ndarray:
        window = window_seconds(seconds, now)
        first = int(window[0])
        try:
            with self.path.open("rb") as file:
                counts = self._tail(file, since=first, seconds=seconds)
        except FileNotFoundError as exc:
            missing = f"{self.path} does not exist (the local serving runtime may not be running)"
            raise SourceUnavailable(missing) from exc
        except OSError as exc:
            raise SourceUnavailable(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        if not counts:
            raise SourceUnavailable(f"{self.path} has no rows yet")
        newest = max(counts)
        if now - newest > self.stale_after_s:
            raise SourceUnavailable(
                f"{self.path} is stale: its newest row is {now - newest:.0f} s old "
                f"(more than {self.stale_after_s:g} s; the local router may have stopped)"
            )
        rates = np.full(seconds, np.nan)
        for second, count in counts.items():
            if first <= second < first + seconds:
                rates[second - first] = count
        return rates

    def _tail(self, file: BinaryIO, *, since: int, seconds: int) -> dict[int, float]:
        """Rows from the newest back to the first one older than ``since`` (or the start of the file)."""
        header = file.readline()
        if header.rstrip(b"\r\n") != HEADER.encode():
            shown = header[:60].decode("utf-8", "replace").rstrip("\r\n") or "empty"
            raise SourceUnavailable(f"{self.path}: the first line is {shown!r}, expected {HEADER!r}")
        body_start = file.tell()
        size = file.seek(0, os.SEEK_END)
        chunk = max(_TAIL_BYTES, _BYTES_PER_ROW * seconds)
        while True:
            offset = max(body_start, size - chunk)
            file.seek(offset)
            lines = file.read(size - offset).split(b"\n")
            # The piece after the last newline is a row still being written (or nothing); the piece before
            # the first one may be the end of a row cut by the seek.
            complete = lines[:-1] if offset == body_start else lines[1:-1]
            counts: dict[int, float] = {}
            reached = offset == body_start
            for line in reversed(complete):
                if not line.strip():
                    continue
                second, count = self._row(line)
                counts.setdefault(second, count)  # the later of two rows for one second wins
                if second < since:
                    reached = True
                    break
            if reached:
                return counts
            chunk *= 2

    def _row(self, line: bytes) -> tuple[int, float]:
        text = line.decode("utf-8", "replace").rstrip("\r")
        fields = text.split(",")
        try:
            second, count = int(fields[0]), float(fields[1])
        except (IndexError, ValueError):
            second, count = 0, math.nan
        if len(fields) != 2 or not (math.isfinite(count) and count >= 0):
            raise SourceUnavailable(
                f"{self.path}: malformed row {text[:60]!r} near the end "
                f"(expected a whole unix second and a non-negative count)"
            )
        return second, count


def append_rates(path: Path, counts: Mapping[int, int]) -> None:
    """Append one row per second of ``counts`` (unix second -> requests), oldest first, writing the header
    first when the file is new or empty. A reader that catches an append half-done sees at most one
    unfinished last line, which it skips until its newline lands."""
    rows = []
    for second, count in sorted(counts.items()):
        if int(second) != second or int(count) != count or count < 0:
            raise ValueError(
                f"a row needs a whole unix second and a non-negative count, not {second}: {count}"
            )
        rows.append(f"{int(second)},{int(count)}\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="ascii", newline="") as file:
        file.write(("" if file.tell() else HEADER + "\n") + "".join(rows))
