"""Measuring in fresh processes: the unit of evidence of a saved baseline.

A process's memory layout, allocation addresses, CPU placement and neighbours move all of its
rounds together, so rounds of one process are not independent evidence about the code
(docs/results/process-variation.md). With ``--perf-processes P`` the ``pytest perf`` session
measures every selected benchmark in P child processes, one after the other, each a plain
``pytest perf`` of exactly those benchmarks with its share of the time budget, and the gate
compares processes with processes.

Children never spawn children (``CHILD_ENV``), inherit the session's settings and ``-p``
plugins, and write their results as pytest-benchmark JSON, read back through ``results``.
A child that fails is one line naming the benchmark it was measuring and its last line of output.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import machine, results
from .errors import MeasureError as ChildError
from .options import Settings
from .results import Metric, Process, Result

CHILD_ENV = machine.CHILD_ENV         # set in a child: it measures and never spawns
PROGRESS_ENV = "PERF_CHILD_PROGRESS"  # a file the child appends each benchmark's node id to as it starts it
# Set in the children of --perf-processes: the parent checks every result against the reference
# before it records what they measured, so they do not check again (a check is a float64 step).
CHECKED_ENV = "PERF_CHECKED_BY_PARENT"
PROGRESS_LINE = re.compile(r"[.sFExX]+( *\[ *\d+%\])?")
COUNT_KEYS = ("instructions", "branches", "mispredicts", "l1_misses", "ll_misses", "cycles")  # extra_info, per call
STATISTIC = "min"                     # what each process contributes to the gate (see process-variation.md)
CHILD_OK = (0, 7)                     # a child's exit codes that still give results: pass, a failed check
TAKES_VALUE = ("-p", "-o", "--override-ini", "-c", "--config-file", "--import-mode", "-W")  # passed to children as given




def is_child() -> bool:
    return os.environ.get(CHILD_ENV) == "1"


def checked_by_parent() -> bool:
    return os.environ.get(CHECKED_ENV) == "1"


@dataclass(frozen=True)
class Budget:
    """The session's timing options, shared out among the processes."""

    max_time: float
    min_time: float
    min_rounds: int

    def share(self, processes: int) -> Budget:
        """Each process's share: max_time / P, and enough rounds that P processes still add up to min_rounds."""
        return Budget(self.max_time / processes, self.min_time, max(3, math.ceil(self.min_rounds / processes)))


@dataclass
class Measured:
    """One benchmark measured in several processes: each process's result, in order."""

    per_process: list[Result] = field(default_factory=list)

    @property
    def samples(self) -> list[float]:
        return [s for r in self.per_process for s in r.samples]

    @property
    def processes(self) -> list[Process]:
        return [Process(len(r.samples), min(r.samples), statistic(r.samples, "median")) for r in self.per_process]

    def counts(self) -> dict[str, float]:
        """What callgrind saw per call (instructions, branches, ...), the mean over the processes; {} for times."""
        keys = [k for k in COUNT_KEYS if all(isinstance(r.info.get(k), (int, float)) for r in self.per_process)]
        return {k: sum(r.info[k] for r in self.per_process) / len(self.per_process) for k in keys}

    def values(self, name: str = STATISTIC) -> list[float]:
        """One number per process: the gate's evidence."""
        return [statistic(r.samples, name) for r in self.per_process]


def statistic(samples: Sequence[float], name: str) -> float:
    ordered = sorted(samples)
    if name == "min":
        return ordered[0]
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def passed_through(args: Sequence[str]) -> list[str]:
    """The options of the parent's command line a child needs as they are: plugins, ini overrides, config, warnings."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        i += 1
        flag = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
        if flag not in TAKES_VALUE:
            continue
        if arg != flag:  # -pNAME, --override-ini=KEY=VALUE
            out.append(arg)
        elif i < len(args):  # -p NAME
            out += [arg, args[i]]
            i += 1
    return out


def command(nodeids: Sequence[str], s: Settings, budget: Budget, json_path: Path, storage: Path, rootdir: Path,
            parent_args: Sequence[str]) -> list[str]:
    """The child: ``pytest`` of exactly these benchmarks with the session's settings and one process."""
    sizes = ",".join(p.name for p in s.sizes)
    # --capture=no: what a crashing child writes to its stderr reaches its log, and the one-line error.
    return [sys.executable, "-m", "pytest", *nodeids, "-q", "--capture=no", "-p", "no:cacheprovider", f"--rootdir={rootdir}",
            *passed_through(parent_args),
            f"--benchmark-json={json_path}", f"--benchmark-storage=file://{storage}",
            f"--benchmark-max-time={budget.max_time!r}", f"--benchmark-min-time={budget.min_time!r}",
            f"--benchmark-min-rounds={budget.min_rounds}",
            "--perf-processes=1", f"--perf-backend={','.join(s.backends) or 'available'}", f"--perf-size={sizes}",
            f"--perf-dtype={','.join(s.dtypes)}", f"--perf-threads={s.threads}", f"--perf-timer={s.timer}",
            f"--perf-metric={s.metric}"]


def run_processes(nodeids: Sequence[str], s: Settings, budget: Budget, count: int, *, rootdir: Path, cwd: Path,
                  parent_args: Sequence[str], log: Callable[[str], None], label: str = "process") -> dict[str, Measured]:
    """Measure ``nodeids`` in ``count`` fresh processes, one after the other; {name: Measured}.
    ChildError on the first failure."""
    measured: dict[str, Measured] = {}
    with tempfile.TemporaryDirectory(prefix="perf-processes-") as tmp:
        work = Path(tmp)
        for k in range(1, count + 1):
            json_path, progress, output = work / f"{k}.json", work / f"{k}.progress", work / f"{k}.log"
            cmd = command(nodeids, s, budget.share(count), json_path, work / "storage", rootdir, parent_args)
            env = machine.child_env(s.threads, **{CHILD_ENV: "1", CHECKED_ENV: "1", PROGRESS_ENV: str(progress)})
            start = time.perf_counter()
            with open(output, "w", encoding="utf-8", errors="replace") as out:
                rc = _run(cmd, cwd, env, out)
            where = f"{label} {k}/{count}"
            if rc not in CHILD_OK or not json_path.exists():
                raise ChildError(_failure(where, rc, progress, output))
            try:
                run = results.load_run(json_path)
            except results.ResultsError as exc:
                raise ChildError(f"{where}: its results cannot be read: {exc}") from None
            for name, result in run.results.items():
                if result.samples:
                    measured.setdefault(name, Measured()).per_process.append(result)
            log(f"{where}: {len(run.results)} benchmarks in {time.perf_counter() - start:.1f} s")
    return measured


def count_in_servers(cases: Mapping[str, object], s: Settings, count: int, *, rootdir: Path,
                     parent_args: Sequence[str], log: Callable[[str], None], label: str = "") -> dict[str, Measured]:
    """Count every case (``{name: Case}``) ``count`` times under callgrind; {name: Measured}.

    One zygote per backend runs under callgrind with the project imported (a numpy-only one never
    imports torch); it forks a fresh child for every count (``perf.measure.count_request``), so
    what was counted before, the selection and its order leave nothing behind that a count sees.
    The parent's ``-p`` plugin modules are imported by the zygote too (a test-only plugin that
    changes a kernel at import changes it there). CallgrindError on the first failure.
    """
    from . import callgrind, measure

    by_backend: dict[str, list[str]] = {}
    for name, case in cases.items():
        by_backend.setdefault(case.backend, []).append(name)
    plugins = plugin_modules(parent_args)
    measured: dict[str, Measured] = {}
    metric = Metric(s.metric)
    keep = (*machine.THREAD_VARIABLES, *(k for k in os.environ if k.startswith("PERF_")))
    preloads = {backend: [type(cases[names[0]]).__module__,  # perf.cases: imports kernels
                          "perf.measure", _backend_module(backend), *plugins] for backend, names in by_backend.items()}
    compile_sources(rootdir, [m for preload in preloads.values() for m in preload])  # once for every zygote
    with tempfile.TemporaryDirectory(prefix="perf-count-") as tmp:
        for backend, names in by_backend.items():
            start = time.perf_counter()
            preload = preloads[backend]
            folder = Path(tmp, backend)
            folder.mkdir()
            with callgrind.Server("perf.measure:count_request", folder, preload=preload, pythonpath=[rootdir],
                                  keep=keep) as server:
                for name in names:
                    for _ in range(count):
                        per_call = server.request(measure.count_request_for(cases[name], name, s.threads))
                        value = per_call[metric.value]
                        result = Result(name, metric, (value,), value, None, info=per_call)
                        measured.setdefault(name, Measured()).per_process.append(result)
            log(f"{backend}{' ' + label if label else ''}: {len(names)} benchmarks counted {count} time(s) each, "
                f"a fresh process each, in {time.perf_counter() - start:.1f} s")
    return measured


def compile_sources(rootdir: Path, modules: Sequence[str]) -> None:
    """Byte-compile the project's packages that ``modules`` come from, as the zygote names them.

    A zygote that compiles a module from source (no .pyc yet: the first run in a fresh checkout,
    or a parent with PYTHONDONTWRITEBYTECODE) ends up with another memory layout than one that
    loads a .pyc, and one whose .pyc files name another checkout's path renames every code object
    on loading: either moved small stages' counts by up to 2% (docs/results/counts.md). So the
    files are compiled afresh under the name the zygote imports them by (its first pythonpath
    folder, perf.callgrind.path_name(0)). Where the folder cannot be written, every zygote
    compiles alike.
    """
    import compileall

    from .callgrind import path_name

    for top in dict.fromkeys(m.split(".")[0] for m in modules):
        folder = rootdir / top
        if folder.is_dir():
            compileall.compile_dir(str(folder), ddir=f"{path_name(0)}/{top}", force=True, quiet=2)


def plugin_modules(args: Sequence[str]) -> list[str]:
    """The modules ``-p NAME`` / ``-pNAME`` load (not ``-p no:NAME``)."""
    given = passed_through(args)
    names = [b for a, b in zip(given, given[1:]) if a == "-p"] + [a[2:] for a in given if a.startswith("-p") and a != "-p"]
    return [n for n in names if n and not n.startswith("no:")]


def _backend_module(backend: str) -> str:
    import kernels

    return kernels.backend(backend).raw.__name__


def _run(cmd: list[str], cwd: Path, env: Mapping[str, str], out) -> int:
    """The child's exit status; Ctrl-C in the parent stops the child too, then goes on up."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    try:
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _failure(where: str, rc: int, progress: Path, output: Path) -> str:
    started = _lines(progress)
    bench = f"while measuring {started[-1]}" if started else "before its first benchmark"
    how = f"was killed by signal {-rc}" if rc < 0 else f"exited {rc}" if rc not in CHILD_OK else "wrote no results"
    said = [line for line in _lines(output) if not PROGRESS_LINE.fullmatch(line.strip())]  # not pytest's dots
    last = (said or ["no output"])[-1]
    return f"{where} {how} {bench}; its last line: {last.strip()[:300]}"


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return []


def note_progress(nodeid: str) -> None:
    """In a child: say which benchmark starts, so a crash can be named."""
    path = os.environ.get(PROGRESS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(nodeid + "\n")
