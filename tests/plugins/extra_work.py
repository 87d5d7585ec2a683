"""Test-only pytest plugin: deterministic changes to the stages, for the counted metric's calibration.

    PERF_EXTRA_WORK="relu:0,grad_y_pred:1" pytest perf -p tests.plugins.extra_work ...
    PERF_RELU_BACKWARD=select pytest perf -p tests.plugins.extra_work ...
    PERF_LAYOUT_PAD=4096 pytest perf -p tests.plugins.extra_work ...

``PERF_EXTRA_WORK`` wraps each named stage (relu, grad_y_pred) of every backend module: the
wrapper calls the stage, then runs N iterations of a Python loop (the same instructions on every
call, no memory traffic; with N=0 the wrapper alone). ``PERF_RELU_BACKWARD=select`` swaps
relu_backward back to the branching select this project replaced (``np.where`` /
``masked_fill``), exact like the fused form: the real regression.
``PERF_LAYOUT_PAD=N`` changes no stage: it keeps N bytes in small objects alive from import on,
as a change to unrelated code would, moving where everything allocated later lies in memory.

The change is made when the module is imported, so it holds in every process that imports it:
pytest's, its child processes' and the counting zygote's (perf.processes preloads ``-p`` plugin
modules there). Nothing of it touches kernels/ on disk. docs/results/counts.md uses it.
"""

from __future__ import annotations

import functools
import os

import kernels

WRAPPABLE = ("relu", "grad_y_pred")  # the microsecond-scale stages the calibration changes


def with_loop(stage: str, fn, iterations: int):
    """``fn`` (relu or grad_y_pred) followed by ``iterations`` turns of a counting loop. The wrapper
    has the stage's own parameters, not ``*args, **kwargs``, whose packing alone cost ~1,200
    instructions (5% of numpy's relu at seed); with them it adds ~900 to numpy's relu and ~570 to
    torch's grad_y_pred, each turn ~200 more."""
    if stage == "relu":

        @functools.wraps(fn)
        def relu(h, out=None):
            result = fn(h, out=out)
            i = 0
            while i < iterations:
                i += 1
            return result

        return relu

    @functools.wraps(fn)
    def grad_y_pred(y_pred, y, out=None):
        result = fn(y_pred, y, out=out)
        i = 0
        while i < iterations:
            i += 1
        return result

    return grad_y_pred


def select_numpy(grad_h_relu, h, out=None, scratch=None):
    import numpy as np

    chosen = np.where(h < 0, 0, grad_h_relu)
    if out is None:
        return chosen
    out[...] = chosen
    return out


def select_torch(grad_h_relu, h, out=None, scratch=None):
    if out is None:
        return grad_h_relu.masked_fill(h < 0, 0)
    return out.copy_(grad_h_relu).masked_fill_(h < 0, 0)


def parse(spec: str) -> dict[str, int]:
    """'stage:N,...' as {stage: N}; ValueError, one line, for anything else."""
    loops = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        stage, _, n = item.partition(":")
        if stage not in WRAPPABLE or not n.isdigit():
            raise ValueError(f"PERF_EXTRA_WORK: {item!r} is not STAGE:ITERATIONS with STAGE one of "
                             f"{', '.join(WRAPPABLE)}")
        loops[stage] = int(n)
    return loops


def change(module, loops: dict[str, int], relu_backward: str) -> None:
    if relu_backward:
        module.relu_backward = select_numpy if module.__name__.endswith("numpy_") else select_torch
    for stage, n in loops.items():
        setattr(module, stage, with_loop(stage, getattr(module, stage), n))


def install(extra: str, relu_backward: str) -> None:
    """Change each backend module when kernels first hands it out (a numpy-only run never imports torch)."""
    if relu_backward not in ("", "select"):
        raise ValueError(f"PERF_RELU_BACKWARD: {relu_backward!r}; accepted: select")
    loops = parse(extra)
    if not loops and not relu_backward:
        return
    changed: set[str] = set()
    original = kernels._module

    def module_changed_once(name):
        module = original(name)
        if module.__name__ not in changed:
            changed.add(module.__name__)
            change(module, loops, relu_backward)
        return module

    kernels._module = module_changed_once


install(os.environ.get("PERF_EXTRA_WORK", ""), os.environ.get("PERF_RELU_BACKWARD", ""))
_PAD = [bytes(64) for _ in range(int(os.environ.get("PERF_LAYOUT_PAD", "0")) // 64)]
