"""Per-container log buffers: lines captured from a pod's process, served on ``pods/<name>/log``.

Each line keeps the time it was read, so ``timestamps=true`` and ``sinceSeconds`` behave as with a
real kubelet, and followers (``follow=true``) are woken up as new lines arrive until the buffer closes.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator

from ipa_tasks.fake_kube_api.objects import now

# Oldest lines are dropped beyond this, so a chatty long-running demo pod cannot exhaust memory.
MAX_LINES = 100_000


class LogBuffer:
    """Lines of one container's stdout+stderr; closed when the container has terminated."""

    def __init__(self, max_lines: int = MAX_LINES) -> None:
        self._lines: list[tuple[datetime.datetime, str]] = []
        self._dropped = 0  # absolute index of self._lines[0], so followers survive trimming
        self._closed = False
        self._max_lines = max_lines
        self._changed = asyncio.Condition()

    @property
    def closed(self) -> bool:
        return self._closed

    async def append(self, line: str, stamp: datetime.datetime | None = None) -> None:
        async with self._changed:
            self._lines.append((stamp or now(), line))
            if len(self._lines) > self._max_lines:
                excess = len(self._lines) - self._max_lines
                del self._lines[:excess]
                self._dropped += excess
            self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    def text(self) -> str:
        """The whole retained log, one ``\\n``-terminated line per captured line."""
        return "".join(f"{line}\n" for _, line in self._lines)

    def tail(self, max_lines: int, max_bytes: int) -> str:
        """The last lines within both limits (the kubelet's FallbackToLogsOnError message)."""
        text = "\n".join(line for _, line in self._lines[-max_lines:])
        return text[-max_bytes:]

    def _first_index(self, since: datetime.datetime | None, tail: int | None) -> int:
        start = self._dropped
        if since is not None:
            start += next((i for i, (stamp, _) in enumerate(self._lines) if stamp >= since), len(self._lines))
        if tail is not None:
            start = max(start, self._dropped + len(self._lines) - tail)
        return start

    async def read(
        self, *, follow: bool, since: datetime.datetime | None = None, tail: int | None = None
    ) -> AsyncIterator[tuple[datetime.datetime, str]]:
        """Yield ``(timestamp, line)``; with ``follow``, keep waiting for lines until closed."""
        index = self._first_index(since, tail)
        while True:
            while index < self._dropped + len(self._lines):
                yield self._lines[max(index - self._dropped, 0)]
                index = max(index, self._dropped) + 1
            if not follow or self._closed:
                return
            async with self._changed:
                await self._changed.wait_for(
                    lambda seen=index: self._closed or seen < self._dropped + len(self._lines)
                )
