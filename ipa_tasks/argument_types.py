"""Argument types the project's commands share (``argparse`` ``type=`` callables), so that a bad value reads
the same in every ``--help``-documented command."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """A whole number of at least ``minimum``; anything else is an ``ArgumentTypeError`` saying why."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return parse
