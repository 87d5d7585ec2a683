"""Counting instead of timing: which cases are counted, how many calls, and the zygotes that count them.

One zygote per backend runs under callgrind with the project imported (a numpy-only one never
imports torch); it forks a fresh child for every count (``count_request``), so what was counted
before, the selection and its order leave nothing behind that a count sees. The parent's ``-p``
plugin modules are imported by the zygote too (a test-only plugin that changes a kernel at import
changes it there). Why each precaution is there: docs/results/counts.md.
"""

from __future__ import annotations

import compileall
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import kernels
from kernels.problem import Problem

from . import callgrind, machine, measured
from .cases import PROBES, Case, bind
from .measured import Measured, ProcessResult
from .metric import Metric

# Calls counted per benchmark and process (and uninstrumented warm-up calls before them), fewer from
# HEAVY_FLOPS a call, and the most work a counted call may do: under callgrind a call runs several
# hundred times slower than on the CPU (docs/results/counts.md).
COUNT_CALLS = 10
COUNT_CALLS_HEAVY = 3
HEAVY_FLOPS = 1e6
COUNT_FLOPS_LIMIT = 2e8
HANDLER = "perf.counting:count_request"


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


def request_for(case: Case, name: str, threads: int) -> dict:
    """The request ``count_request`` answers for ``case``."""
    return {"stage": case.stage, "backend": case.backend, "problem": dataclasses.asdict(case.problem), "name": name,
            "threads": threads}


def count_request(request: dict) -> dict:
    """The zygote's handler (``perf.callgrind.serve``): in a child forked for this one benchmark, bind the
    case afresh and count its calls; what callgrind saw per call."""
    machine.pin_threads(request["threads"], import_torch=False)  # a numpy zygote never imports torch
    case = Case(request["stage"], request["backend"], Problem(**request["problem"]))
    bound = bind(case)
    calls, warmup = count_plan(case)
    counted = callgrind.count(bound.target, bound.args, setup=bound.setup, name=request["name"], calls=calls,
                              warmup=warmup)
    return counted.per_call.summary()


@dataclass
class CountingZygotes:
    """Every case counted ``processes`` times, a fresh fork of its backend's zygote each time."""

    processes: int
    metric: Metric
    rootdir: Path
    threads: int
    plugins: Sequence[str] = ()          # the -p modules of the parent's command line, preloaded by the zygotes
    log: Callable[[str], None] = print

    def measure(self, cases: Mapping[str, Case], *, label: str = "") -> dict[str, Measured]:
        """Count ``cases`` ({name: Case}); CallgrindError on the first failure."""
        by_backend: dict[str, list[str]] = {}
        for name, case in cases.items():
            by_backend.setdefault(case.backend, []).append(name)
        keep = (*machine.THREAD_VARIABLES, *(k for k in os.environ if k.startswith("PERF_")))
        preloads = {backend: ["perf.cases", "perf.counting", kernels.backend(backend).raw.__name__, *self.plugins]
                    for backend in by_backend}
        compile_sources(self.rootdir, [m for preload in preloads.values() for m in preload])  # once for every zygote
        found: dict[str, Measured] = {}
        with tempfile.TemporaryDirectory(prefix="perf-count-") as tmp:
            for backend, names in by_backend.items():
                start = time.perf_counter()
                folder = Path(tmp, backend)
                folder.mkdir()
                with callgrind.Server(HANDLER, folder, preload=preloads[backend], pythonpath=[self.rootdir],
                                      keep=keep) as server:
                    for name in names:
                        for _ in range(self.processes):
                            per_call = server.request(request_for(cases[name], name, self.threads))
                            value = per_call[self.metric.value]
                            measured.gather(found, [ProcessResult(name, (value,), 1, per_call)])
                self.log(f"{backend}{' ' + label if label else ''}: {len(names)} benchmarks counted {self.processes} "
                         f"time(s) each, a fresh process each, in {time.perf_counter() - start:.1f} s")
        return found


def compile_sources(rootdir: Path, modules: Sequence[str]) -> None:
    """Byte-compile the project's packages that ``modules`` come from, as the zygote names them.

    A zygote that compiles a module from source (no .pyc yet) ends up with another memory layout
    than one that loads a .pyc, and one whose .pyc files name another checkout's path renames
    every code object on loading: either moved small stages' counts (docs/results/counts.md). So
    the files are compiled afresh under the name the zygote imports them by (its first pythonpath
    folder, perf.callgrind.path_name(0)). Where the folder cannot be written, every zygote
    compiles alike.
    """
    for top in dict.fromkeys(m.split(".")[0] for m in modules):
        folder = rootdir / top
        if folder.is_dir():
            compileall.compile_dir(str(folder), ddir=f"{callgrind.path_name(0)}/{top}", force=True, quiet=2)
