"""Counting instead of timing: which cases are counted, how, and the zygotes under callgrind that count them.

One zygote per backend (a numpy-only one never imports torch) runs under callgrind: a ``pytest perf``
session of that backend's selected benchmarks, configured as the parent's run is (its plugins,
conftest files, ini options and environment), that forks a fresh child for every count
(``perf.zygote``). So what was counted before, the selection and its order leave nothing behind
that a count sees, and what the configuration changes in the code is counted.

What the zygote sees is kept from moving between runs and checkouts (docs/results/counts.md): the
project is copied into a folder of the run and byte-compiled there, and the zygote names that copy,
its dump folder, the compiled shim and its bytecode through fixed descriptors (``/dev/fd/N``), works
in ``/``, runs with a fixed hash seed and without address-space randomisation, and gets the
parent's environment without the variables that only name the session or the CI run (``SESSION``),
padded to a fixed size. Valgrind's CPU has no AVX-512: each zygote reports the code path it
counted (``machine.code_path``), and the run records it.
"""

from __future__ import annotations

import compileall
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import kernels

from . import callgrind, command, machine, measured, zygote
from .cases import PROBES, Case, bind
from .measured import Measured, ProcessResult
from .metric import Metric
from .progress import Progress

# Calls counted per benchmark and process (and uninstrumented warm-up calls before them), fewer from
# HEAVY_FLOPS a call, and the most work a counted call may do: under callgrind a call runs several
# hundred times slower than on the CPU (docs/results/counts.md).
COUNT_CALLS = 10
COUNT_CALLS_HEAVY = 3
HEAVY_FLOPS = 1e6
COUNT_FLOPS_LIMIT = 2e8

# The zygote's fixed names: its dump folder, the project's copy, the compiled shim.
DUMPS_FD, PROJECT_FD, SHIM_FD = 3, 4, 5
PROJECT = f"/dev/fd/{PROJECT_FD}"
# Variables that only name the session, the terminal or the CI run: they change from run to run and
# pick no code path, while their contents move the counting process's memory, and its counts.
SESSION = re.compile(r"^(PWD|OLDPWD|SHLVL|_|TERM|TERM_.*|COLORTERM|COLUMNS|LINES|SSH_.*|TMUX.*|STY|WINDOW|DISPLAY|"
                     r"XDG_SESSION_.*|XDG_RUNTIME_DIR|DBUS_.*|INVOCATION_ID|JOURNAL_STREAM|LS_COLORS|"
                     r"GITHUB_.*|RUNNER_.*|ACTIONS_.*|CI|PERF_AB_.*|PERF_CHILD_.*|PYTEST_.*)$")
ENV_PAD_TO = 1 << 14  # bytes: the zygote's environment is padded to a multiple of this
# Not copied with the project: version control, environments, caches, saved runs, documents.
NOT_STAGED = (".git", ".venv", "venv", ".tox", ".nox", "__pycache__", "*.pyc", ".benchmarks", ".pytest_cache",
              ".ruff_cache", "node_modules", "build", "dist", "*.egg-info", "docs")


def cannot_count(case: Case, b: kernels.Backend) -> str:
    """Why ``case`` is not counted under callgrind ('' where it is)."""
    if b.device_name != "cpu":
        return f"counting under callgrind is for CPU backends; {case.backend} runs on {b.device_name}"
    if case.stage in PROBES:
        return "a roofline probe measures a rate of time: it is not counted"
    flops = case.problem.flops(case.stage)
    if flops > COUNT_FLOPS_LIMIT:
        return (f"{case.id}: {flops:.3g} FLOPs a call would take too long to count under callgrind "
                f"(the limit is {COUNT_FLOPS_LIMIT:.0e} a call: use --perf-metric time at this size)")
    return ""


def count_plan(case: Case) -> tuple[int, int]:
    """(counted calls, warm-up calls) for counting ``case``."""
    if case.problem.flops(case.stage) >= HEAVY_FLOPS:
        return COUNT_CALLS_HEAVY, COUNT_CALLS_HEAVY
    return COUNT_CALLS, callgrind.DEFAULT_WARMUP


# --------------------------------------------------------------------------- in the zygote


def serve(cases: Mapping[str, Case]) -> None:
    """Serve counts of ``cases`` ({name: Case}) from this zygote: ``{"name": N}`` is answered with what
    callgrind saw per call, ``{"what": "code path"}`` with the code path this process runs."""
    if callgrind.under_callgrind():
        callgrind.prime()  # once, here: every child inherits the specialised bytecode

    def handle(request: dict, send: zygote.Send) -> None:
        if request.get("what") == "code path":
            send({"code_path": machine.code_path()})
            return
        name = request["name"]
        bound = bind(cases[name])
        calls, warmup = count_plan(cases[name])
        counted = callgrind.count(bound.target, bound.args, setup=bound.setup, name=name, calls=calls, warmup=warmup)
        send({"name": name, "info": counted.per_call.summary()})

    zygote.serve(handle)


# --------------------------------------------------------------------------- the parent


@dataclass
class CountingZygotes:
    """Every case counted ``processes`` times, a fresh fork of its backend's zygote each time."""

    processes: int
    metric: Metric
    rootdir: Path
    args: Sequence[str]                  # the session's settings and the options children take as they are
    check_path: Callable[[dict[str, str]], None] = lambda path: None   # told each zygote's code path; may refuse it

    def measure(self, cases: Mapping[str, Case], progress: Progress, *, label: str = "") -> dict[str, Measured]:
        """Count ``cases`` ({node id: Case}); CallgrindError or MeasureError on the first failure."""
        by_backend: dict[str, list[str]] = {}
        for name, case in cases.items():
            by_backend.setdefault(case.backend, []).append(name)
        found: dict[str, Measured] = {}
        # ignore_cleanup_errors: what is left of an interrupted count must not hide why it stopped
        with tempfile.TemporaryDirectory(prefix="perf-count-", ignore_cleanup_errors=True) as tmp:
            work = Path(tmp)
            stage(self.rootdir, work / "project")
            shim = callgrind.build_shim(fallback=work)
            for backend, names in by_backend.items():
                start = time.perf_counter()
                dumps = work / f"dumps-{backend}"
                dumps.mkdir()
                with zygote.Zygote(self._argv(backend, names, dumps), zygote_env(), "/", work / f"zygote-{backend}.log",
                                   {DUMPS_FD: dumps, PROJECT_FD: work / "project", SHIM_FD: shim}) as z:
                    (path,) = z.request({"what": "code path"})
                    self.check_path(path["code_path"])
                    for name in names:
                        for _ in range(self.processes):
                            progress.step(f"{backend}: {name.rpartition('::')[2]}")
                            (reply,) = z.request({"name": name})
                            value = reply["info"][self.metric.value]
                            measured.gather(found, [ProcessResult(name, (value,), 1, reply["info"])])
                progress.finished(f"{backend}{' ' + label if label else ''}: {len(names)} benchmarks counted "
                                  f"{self.processes} time(s) each, a fresh process each, in "
                                  f"{time.perf_counter() - start:.1f} s")
        return found

    def _argv(self, backend: str, names: Sequence[str], dumps: Path) -> list[str]:
        args = [*_in_project(self.args), f"--perf-backend={backend}", "--perf-processes=1", "--capture=no", "-p", "no:xdist"]
        pytest = command.pytest_perf(args, select=[f"{PROJECT}/{n}" for n in names], rootdir=PROJECT)
        return callgrind.command(pytest, dumps)  # valgrind writes there itself; the zygote reads them as /dev/fd/3


def _in_project(args: Sequence[str]) -> list[str]:
    """The parent's arguments as the zygote must see them: a relative configuration file names the project's copy."""
    out = []
    for arg in args:
        for flag in ("-c", "--config-file="):
            if arg.startswith(flag) and arg != flag and not arg[len(flag):].startswith("/"):
                arg = f"{flag}{PROJECT}/{arg[len(flag):]}"
        out.append(arg)
    return out


def left_out(base: Mapping[str, str] | None = None) -> list[str]:
    """The variables of ``base`` (default: this environment) a counting zygote does not get (``SESSION``)."""
    return sorted(k for k in (os.environ if base is None else base) if SESSION.match(k))


def zygote_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The counting zygote's environment: the caller's, less what only names the session (``SESSION``), with
    one thread per pool (spinning workers would be counted), a fixed hash seed, the zygote's fixed names,
    padded to a multiple of ``ENV_PAD_TO`` bytes (the environment's size moves where the stack lies)."""
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items() if not SESSION.match(k) and k not in machine.OUTER_PYTEST}
    env.update(machine.thread_env(1))
    env.update({"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", machine.CHILD_ENV: "1", zygote.SERVE_ENV: "count",
                callgrind.ENV_DIR: f"/dev/fd/{DUMPS_FD}", callgrind.SHIM_ENV: f"/dev/fd/{SHIM_FD}",
                "PYTHONPATH": os.pathsep.join([PROJECT, *filter(None, [base.get("PYTHONPATH")])])})
    env.pop("PERF_ENV_PAD", None)
    size = sum(len(k) + len(v) + 2 for k, v in env.items()) + len("PERF_ENV_PAD") + 2
    env["PERF_ENV_PAD"] = "x" * (-size % ENV_PAD_TO)
    return env


def stage(rootdir: Path, dest: Path) -> None:
    """The project copied to ``dest`` (not its version control, environments, caches or documents) and
    byte-compiled there under the zygote's name for it: a zygote that compiles a module from source ends
    up with another memory layout than one that loads its bytecode (docs/results/counts.md). The
    checkout itself is only read: a read-only one counts like any other."""
    shutil.copytree(rootdir, dest, ignore=shutil.ignore_patterns(*NOT_STAGED), symlinks=True)
    compileall.compile_dir(str(dest), ddir=PROJECT, force=True, quiet=2)
