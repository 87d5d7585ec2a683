"""Child processes: pinned thread counts, output streamed to the log and its tail kept."""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from perf.ab import OUTER_PYTEST  # an outer pytest's variables, which a child session must not inherit

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def child_env(threads: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for benchmark processes: every BLAS/OpenMP pool pinned to ``threads``."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in OUTER_PYTEST}
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    return env


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


def parse_with_pytest_args(parser: argparse.ArgumentParser, argv: Sequence[str], error: type[Exception]) -> argparse.Namespace:
    """Parse ``argv``; ``opts.pytest`` = the shell-split ``--pytest-args`` string, then whatever follows ``--``."""
    argv = list(argv)
    tail: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, tail = argv[:cut], argv[cut + 1:]
    opts = parser.parse_args(argv)
    try:
        opts.pytest = [*shlex.split(opts.pytest_args), *tail]
    except ValueError as exc:
        raise error(f"--pytest-args: {exc}") from None
    return opts
