"""What a person sees while processes measure: a live progress bar on a terminal, one line per step elsewhere.

The bar is tqdm's (hyperfine's live estimate is the anchor): small, no dependencies of its own, and it
draws on one line that it rewrites, with the elapsed time and an estimate of what is left, and goes
away when done (nothing of it stays in the output). pytest's own output is not captured while the
processes run (before the first test), so the bar writes straight to the terminal. Where the output
is not a terminal (a CI log) or pytest runs with ``-q``, no bar: each finished step is one line.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from typing import TextIO


class Progress:
    """``total`` steps of measuring: ``step(what)`` as each starts, ``finished(text)`` after a stage, ``close()``."""

    def __init__(self, total: int, label: str, log: Callable[[str], None], *, live: bool,
                 stream: TextIO | None = None) -> None:
        self._log = log
        self._bar = None
        if live and total > 0:
            from tqdm import tqdm

            # The size from the terminal, else COLUMNS and LINES, else 100x24: a terminal that says it has no
            # size (a pseudo-terminal with none set) would get no bar at all.
            width, height = shutil.get_terminal_size((100, 24))
            self._bar = tqdm(total=total, desc=label, file=stream or sys.stderr, leave=False, ncols=width, nrows=height,
                             bar_format="{desc}: {n_fmt}/{total_fmt} {bar:20} {elapsed} elapsed, ~{remaining} left; {postfix}")

    @property
    def live(self) -> bool:
        return self._bar is not None

    def step(self, what: str = "") -> None:
        """One step done; ``what`` is measuring now (shown on the bar)."""
        if self._bar is not None:
            self._bar.set_postfix_str(what[-60:], refresh=False)
            self._bar.update(1)

    def finished(self, text: str) -> None:
        """A stage finished (a process, a backend's counts): one line where there is no bar; the bar said it."""
        if self._bar is None:
            self._log(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
