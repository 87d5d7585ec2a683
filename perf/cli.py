"""What every ``python -m`` command of this suite shares: exit codes, one-line errors, the
``--`` split and git.

Exit codes (the README's contract, the same for every command):
    0  pass: nothing regressed (or nothing to gate, or a regression accepted by label)
    1  a regression, and nothing else
    2  a usage error, an unreadable input or an environment failure: one line on stderr
    7  a check failed that is not a regression (perf.crosscheck: two clocks disagree)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import ResultsError, UsageError

PASS, REGRESSION, ERROR, CHECK_FAILED, INTERRUPTED = 0, 1, 2, 7, 130




class Parser(argparse.ArgumentParser):
    """argparse whose errors are one ``UsageError`` line (no usage dump), so ``main`` exits 2 cleanly."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def split_dashdash(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the command's own arguments, everything after the first '--')."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
    return value


def git(repo: str | Path, *args: str) -> str:
    """git's stdout, stripped; UsageError with git's last line when it fails."""
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise UsageError("git not found on PATH") from None
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise UsageError(f"git {' '.join(args)}: {last}")
    return proc.stdout.strip()


def run_main(prog: str, body: Callable[[], int]) -> int:
    """``body()``'s exit status; a UsageError or ResultsError is one line ``PROG: error: ...`` and 2,
    Ctrl-C is one line and 130. Anything else is a bug and keeps its traceback."""
    try:
        return body()
    except (UsageError, ResultsError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED


def pytest_args(text: str, tail: Sequence[str] = (), option: str = "--pytest-args") -> list[str]:
    """pytest's arguments: ``text`` (an option's value holding them as one shell-quoted string), split
    as a shell would, then ``tail`` (what followed ``--``); UsageError naming ``option`` when unbalanced."""
    try:
        return [*shlex.split(text or ""), *tail]
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: {exc}") from None
