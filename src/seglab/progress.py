"""Progress bars that suit where they are written: a live bar on a terminal, and on a
pipe or a log file (CI, ``> run.log``) one plain line at most every ``LOG_SECONDS``
instead of thousands of carriage-return updates."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

LOG_SECONDS = 30.0
"""Least seconds between two progress lines when stderr is not a terminal."""


def on_terminal() -> bool:
    return sys.stderr.isatty()


def bar(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
        unit: str = "it", disable: bool = False, initial: int = 0) -> tqdm:
    """A tqdm bar; off a terminal it updates rarely and without control characters."""
    extra: dict[str, Any] = {} if on_terminal() else {"mininterval": LOG_SECONDS,
                                                      "ascii": True, "ncols": 100}
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable,
                initial=initial, **extra)


def lightning_refresh_rate(steps_per_epoch: int) -> int:
    """Steps between Lightning progress-bar updates: every step on a terminal, about
    five lines per epoch otherwise."""
    return 1 if on_terminal() else max(1, steps_per_epoch // 5)
