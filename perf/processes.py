"""Measuring in several processes: the unit of evidence of a saved baseline.

A process's memory layout, allocation addresses, CPU placement and neighbours move all of its
rounds together, so rounds of one process are not independent evidence about the code
(docs/results/process-variation.md). Every selected benchmark is measured in P processes, one
after the other, each with its share of the time budget; the gate then compares processes with
processes. Two ways to start them, behind one interface:

- ``ForkedProcesses``: each process a zygote (``perf.zygote``), a ``pytest perf`` session of the selection
  that imports, configures and collects once, then forks a child for each benchmark; CPU backends only (a
  CUDA context does not survive a fork);
- ``FreshProcesses``: each process a plain ``pytest perf`` of the selection, started afresh.

Measuring processes never spawn processes (``machine.CHILD_ENV``), see the session's settings and
the parent's ``-p`` plugins, and send back one result per benchmark (``perf.measured``). One that
fails is one line naming the benchmark it was measuring and its last line of output.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import command, machine, measured, zygote
from .cases import Case, bind, prepare
from .errors import MeasureError
from .measure import Plan, warm_up
from .measured import Measured, ProcessResult
from .progress import Progress
from .timers import timer_for

PROGRESS_ENV = "PERF_CHILD_PROGRESS"  # a file the child appends each benchmark's node id to as it starts it
RESULTS_ENV = "PERF_CHILD_RESULTS"    # a file the child appends each benchmark's result line to (perf.measured)
# Set in the children: the parent checks every result against the reference before it records
# what they measured, so they do not check again (a check is a float64 step).
CHECKED_ENV = "PERF_CHECKED_BY_PARENT"
PROGRESS_LINE = re.compile(r"[.sFExX]+( *\[ *\d+%\])?")
CHILD_OK = (0, 7)                     # a child's exit codes that still give results: pass, a failed check
OWN_ROUND = 0.01                      # seconds: a call this long is a round of its own, whatever the plan
# Zygotes started at once: two halve what their starts cost a run on two CPUs; more would multiply the memory
# held (each holds every case's host data, the probes' hundreds of MB included) for less and less.
START_AT_ONCE = 2


def is_child() -> bool:
    return os.environ.get(machine.CHILD_ENV) == "1"


def checked_by_parent() -> bool:
    return os.environ.get(CHECKED_ENV) == "1"


def results_file() -> str:
    """Where this process sends its results ('' when nobody asked)."""
    return os.environ.get(RESULTS_ENV, "")


@dataclass(frozen=True)
class Budget:
    """The session's timing options, shared out among the processes."""

    max_time: float
    min_time: float
    min_rounds: int

    def share(self, processes: int, start_s: float = 0.0) -> Budget:
        """Each process's share: max_time / P less ``start_s``, what starting one measuring process costs (so that a
        benchmark's P processes take about max_time in all, as one process would; never less than half of
        max_time / P), and enough rounds (two at least) that P processes still add up to min_rounds."""
        each = self.max_time / processes
        return Budget(max(each - start_s, each / 2), self.min_time, max(2, math.ceil(self.min_rounds / processes)))

    def args(self) -> list[str]:
        return [f"--benchmark-max-time={self.max_time!r}", f"--benchmark-min-time={self.min_time!r}",
                f"--benchmark-min-rounds={self.min_rounds}"]


def measuring_env(threads: int, **extra: str) -> dict[str, str]:
    """The environment of a measuring process: every pool pinned, measuring in itself, checked by its parent."""
    return machine.child_env(threads, **{machine.CHILD_ENV: "1", CHECKED_ENV: "1"}, **extra)


@dataclass
class Processes:
    """What both ways of starting measuring processes need: how many, each's share of the time, what they run."""

    processes: int
    budget: Budget
    args: Sequence[str]          # the session's settings and the options children take as they are
    rootdir: Path
    cwd: Path
    threads: int


class ForkedProcesses(Processes):
    """P processes of the selection, one after the other, each a zygote of its own that forks a child for each
    benchmark it measures.

    A zygote each, not one for all: what a process's memory layout makes of a benchmark is set where the
    zygote starts (its address space, its heap), and every child forked from one zygote inherits it, so P
    children of one zygote are one draw of it, and a run's interval could not see it
    (docs/results/fork-server.md, "One zygote for all processes")."""

    def measure(self, cases: Mapping[str, object], progress: Progress, *, label: str = "process") -> dict[str, Measured]:
        """Measure ``cases`` ({node id relative to rootdir: Case}), each benchmark of each process in a child
        forked for it; MeasureError on the first failure. The zygotes start ``START_AT_ONCE`` at a time (fewer
        with fewer CPUs), all of a batch ready before the first of them measures: their starts share the CPUs
        with each other, never with a measuring child."""
        argv = command.pytest_perf([*self.args, "--perf-processes=1", "--capture=no", "-p", "no:xdist"],
                                   select=[f"{self.rootdir}/{name}" for name in cases], rootdir=self.rootdir)
        env = measuring_env(self.threads, **{zygote.SERVE_ENV: "time"})
        batch = max(1, min(START_AT_ONCE, len(machine.cpus())))
        calls: dict[str, float] = {}  # name -> seconds a call, as the first process calibrated it
        found: dict[str, Measured] = {}
        started: list[zygote.Zygote] = []  # ready, not yet measuring
        with tempfile.TemporaryDirectory(prefix="perf-fork-") as tmp:
            try:
                for k in range(1, self.processes + 1):
                    where = f"{label} {k}/{self.processes}"
                    start = time.perf_counter()
                    if not started:
                        started = self._start(argv, env, Path(tmp), range(k, min(k + batch, self.processes + 1)), label)
                    with started.pop(0) as z:
                        share = dataclasses.asdict(self.budget.share(self.processes, start_s=_start_cost(z)))
                        for name in cases:
                            progress.step(f"{where}: {name.rpartition('::')[2]}")
                            try:
                                (reply,) = z.request({"name": name, "budget": share, "call_s": calls.get(name)})
                            except MeasureError as exc:
                                raise MeasureError(f"{where}, while measuring {name}: {exc}") from None
                            calls.setdefault(name, reply.pop("call_s"))
                            measured.gather(found, [ProcessResult.from_dict(reply, where)])
                    progress.finished(f"{where}: {len(cases)} benchmarks in {time.perf_counter() - start:.1f} s")
            finally:
                for z in started:  # only on an error: started, never measuring
                    z.stop(grace_s=0.0)
        return found

    def _start(self, argv: list[str], env: Mapping[str, str], tmp: Path, numbers: range,
               label: str) -> list[zygote.Zygote]:
        """Zygotes for the processes ``numbers``, started at once; each ready (MeasureError naming its process)."""
        started: list[zygote.Zygote] = []
        try:
            for k in numbers:
                started.append(zygote.Zygote(argv, env, self.cwd, tmp / f"zygote-{k}.log"))
            for k, z in zip(numbers, started):
                try:
                    z.request({"ping": True})
                except MeasureError as exc:
                    raise MeasureError(f"{label} {k}/{self.processes}, before its first benchmark: {exc}") from None
        except BaseException:
            for z in started:
                z.stop(grace_s=0.0)
            raise
        return started


def _start_cost(z: zygote.Zygote, pings: int = 3) -> float:
    """Seconds a measuring child costs beyond its measuring (the fork, its exit, the round trip): the median of
    ``pings`` children that answer at once, of a zygote that is ready (``_start`` waited for its first)."""
    spent = []
    for _ in range(pings):
        start = time.perf_counter()
        z.request({"ping": True})
        spent.append(time.perf_counter() - start)
    return sorted(spent)[len(spent) // 2]


def serve_times(cases: Mapping[str, Case], timer_mode: str) -> None:
    """Serve measuring from this zygote: ``{"ping": true}`` is answered with nothing (the parent timing what
    a child costs); ``{"name": N, "budget": {...}}``, in a child forked for it, with N measured in that
    child: bound to arrays of its own, calibrated (by the first process only: later ones are given its time
    per call), its rounds timed. Before the first fork the zygote makes every case's host data and calls
    every case once, discarding it: what a first call initialises in the libraries is done once for all
    children, which then need no warm-up round of their own."""
    first_call: dict[str, float] = {}
    for name, case in cases.items():
        prepare(case)
        bound = bind(case)
        start = time.perf_counter()
        warm_up(bound)
        first_call[name] = time.perf_counter() - start
    gc.collect()

    def handle(request: dict, send: zygote.Send) -> None:
        if request.get("ping"):  # the parent timing what a child costs: nothing to measure
            return
        budget = Budget(**request["budget"])
        name = request["name"]
        bound = bind(cases[name])
        # Calibrated by the first process only (later ones are given its time per call); a call so long that
        # one is a round and the budget allows few takes the zygote's warm-up call for its size.
        call_s = request.get("call_s") or (first_call[name] if first_call[name] >= OWN_ROUND else None)
        plan = Plan(bound, timer_for(bound.backend, timer_mode), budget.min_time, budget.max_time, budget.min_rounds,
                    call_s=call_s)
        samples = plan.measure(warm_up=False)
        send({**ProcessResult(name, tuple(samples), plan.iterations).as_dict(), "call_s": plan.call_s})

    zygote.serve(handle)


class FreshProcesses(Processes):
    """P fresh ``pytest perf`` processes, one after the other, each measuring the whole selection."""

    def measure(self, cases: Mapping[str, object], progress: Progress, *, label: str = "process") -> dict[str, Measured]:
        """Measure ``cases`` ({node id relative to rootdir: Case}); MeasureError on the first failure."""
        nodeids = [f"{self.rootdir}/{name}" for name in cases]
        found: dict[str, Measured] = {}
        with tempfile.TemporaryDirectory(prefix="perf-processes-") as tmp:
            work = Path(tmp)
            for k in range(1, self.processes + 1):
                where = f"{label} {k}/{self.processes}"
                start = time.perf_counter()
                results = self._one(work, k, nodeids, where, progress)
                measured.gather(found, results)
                progress.finished(f"{where}: {len(results)} benchmarks in {time.perf_counter() - start:.1f} s")
        return found

    def _one(self, work: Path, k: int, nodeids: Sequence[str], where: str,
             progress: Progress) -> list[measured.ProcessResult]:
        sent, started, output = work / f"{k}.results", work / f"{k}.progress", work / f"{k}.log"
        # --capture=no: what a crashing child writes to its stderr reaches its log, and the one-line error.
        share = self.budget.share(self.processes)
        cmd = command.pytest_perf(["--capture=no", *self.args, *share.args(), "--perf-processes=1"],
                                  select=nodeids, rootdir=self.rootdir, storage=work / "storage")
        env = measuring_env(self.threads, **{PROGRESS_ENV: str(started), RESULTS_ENV: str(sent)})
        shown = 0

        def follow() -> None:  # one progress step for each benchmark the child started since the last look
            nonlocal shown
            names = _lines(started)
            for nodeid in names[shown:]:
                progress.step(f"{where}: {nodeid.rpartition('::')[2]}")
            shown = len(names)

        with open(output, "w", encoding="utf-8", errors="replace") as out:
            rc = _run(cmd, self.cwd, env, out, follow)
        if rc not in CHILD_OK:
            raise MeasureError(_failure(where, rc, started, output))
        results = measured.read(sent, where)
        if not results:
            raise MeasureError(_failure(where, rc, started, output))
        return results


def _run(cmd: list[str], cwd: Path, env: Mapping[str, str], out, poll: Callable[[], None]) -> int:
    """The child's exit status, ``poll`` called while it runs; Ctrl-C in the parent stops the child too, then goes on up."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                rc = proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                poll()
                continue
            poll()
            return rc
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _failure(where: str, rc: int, progress: Path, output: Path) -> str:
    started = _lines(progress)
    bench = f"while measuring {started[-1]}" if started else "before its first benchmark"
    how = f"was killed by signal {-rc}" if rc < 0 else f"exited {rc}" if rc not in CHILD_OK else "sent no results"
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
