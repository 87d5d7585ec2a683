"""What the ci commands share beyond perf.cli: child processes whose output streams to the log,
folders checked before anything is measured, the pytest arguments of a command line.

Standard library and perf.cli only: ``ci.gpu_setup`` imports this before anything is installed.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from perf.cli import pytest_args, split_dashdash
from perf.errors import UsageError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def parse_with_pytest_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; ``opts.pytest`` = the shell-split ``--pytest-args`` string, then whatever follows ``--``."""
    own, tail = split_dashdash(argv)
    opts = parser.parse_args(own)
    opts.pytest = pytest_args(opts.pytest_args, tail)
    return opts


def make_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a writable folder, created if need be; UsageError (one line) when it cannot be."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{what} {str(path)!r} is a file, not a folder") from None
    except NotADirectoryError:
        raise UsageError(f"{what} {str(path)!r}: a part of the path is a file, not a folder") from None
    except OSError as exc:
        raise UsageError(f"{what} {str(path)!r}: cannot create it ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {str(path)!r}: not writable")
    return folder


def run_tee(cmd: Sequence[str], *, cwd=None, env=None, tail: int = 20) -> tuple[int, list[str]]:
    """Run ``cmd``, streaming its output (stdout and stderr together) to our stdout; (exit status, last lines)."""
    print(f"$ {' '.join(map(str, cmd))}", flush=True)
    last: collections.deque[str] = collections.deque(maxlen=tail)
    try:
        proc = subprocess.Popen(list(map(str, cmd)), cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
    except OSError as exc:
        return 127, [f"cannot run {cmd[0]}: {exc}"]
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            last.append(line.rstrip("\n"))
        return proc.wait(), list(last)
    except KeyboardInterrupt:
        proc.wait()
        raise
