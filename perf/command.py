"""The one builder of a ``pytest perf`` command line, for every caller that starts one: a measuring
child, a side of an A/B round, the GPU runner's job, the calibration.

pyperf's manager rebuilds its worker's command line in one function; so does this suite.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# Options of the parent's command line a measuring child needs as they are: plugins, ini overrides,
# the configuration file, warning filters. Each takes a value.
PASSED_THROUGH = ("-p", "-o", "--override-ini", "-c", "--config-file", "--import-mode", "-W")


def selects_paths(args: Sequence[str]) -> bool:
    """Whether ``args`` name what to run under perf/ themselves (a path or node id), so ``perf`` is not added."""
    return any(a == "perf" or a.startswith(("perf/", "perf::")) for a in args)


def pytest_perf(args: Sequence[str] = (), *, select: Sequence[str] = (), python: str | os.PathLike = sys.executable,
                json: str | os.PathLike | None = None, storage: str | os.PathLike | None = None,
                rootdir: str | os.PathLike | None = None, quiet: bool = True) -> list[str]:
    """``python -m pytest perf ARGS`` (or ``SELECT ARGS``: node ids) with pytest's cache off (concurrent runs
    share no state), and where given, the results JSON, the storage (a folder) and the rootdir (node ids
    equal in every tree)."""
    selection = list(select) or ([] if selects_paths(args) else ["perf"])
    return [os.fspath(python), "-m", "pytest", *selection, *(["-q"] if quiet else []),
            "-p", "no:cacheprovider",
            *([f"--rootdir={rootdir}"] if rootdir is not None else []),
            *([f"--benchmark-json={json}"] if json is not None else []),
            *([f"--benchmark-storage=file://{storage}"] if storage is not None else []),
            *args]


def passed_through(args: Sequence[str]) -> list[str]:
    """The options of ``args`` that a measuring child takes as they are (``PASSED_THROUGH``, with their values)."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        i += 1
        flag = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
        if flag not in PASSED_THROUGH:
            continue
        if arg != flag:  # -pNAME, --override-ini=KEY=VALUE
            out.append(arg)
        elif i < len(args):  # -p NAME
            out += [arg, args[i]]
            i += 1
    return out


def plugin_modules(args: Sequence[str]) -> list[str]:
    """The modules ``-p NAME`` / ``-pNAME`` in ``args`` load (not ``-p no:NAME``)."""
    given = passed_through(args)
    names = [b for a, b in zip(given, given[1:]) if a == "-p"] + [a[2:] for a in given if a.startswith("-p") and a != "-p"]
    return [n for n in names if n and not n.startswith("no:")]
