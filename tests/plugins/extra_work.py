"""Test-only pytest plugin: deterministic changes to the stages, for the counted metric's calibration.

    PERF_EXTRA_WORK="relu:300,grad_y_pred:300" pytest perf -p tests.plugins.extra_work ...
    PERF_RELU_BACKWARD=select pytest perf -p tests.plugins.extra_work ...

``PERF_EXTRA_WORK`` wraps each named stage of every backend module: the wrapper calls the stage,
then runs N iterations of a Python loop (the same instructions on every call, no memory
traffic). ``PERF_RELU_BACKWARD=select`` swaps relu_backward back to the branching select this
project replaced (``np.where`` / ``masked_fill``), exact like the fused form: the real regression.

The change is made when the module is imported, so it holds in every process that imports it:
pytest's, its child processes' and the counting zygote's (perf.processes preloads ``-p`` plugin
modules there). Nothing of it touches kernels/ on disk. docs/results/counts.md uses it.
"""

from __future__ import annotations

import functools
import os

import kernels


def with_loop(fn, iterations: int):
    """``fn`` followed by ``iterations`` turns of a counting loop."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        i = 0
        while i < iterations:
            i += 1
        return result

    return wrapper


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
        if stage not in kernels.STAGES or not n.isdigit():
            raise ValueError(f"PERF_EXTRA_WORK: {item!r} is not STAGE:ITERATIONS with STAGE one of "
                             f"{', '.join(kernels.STAGES)}")
        loops[stage] = int(n)
    return loops


def change(module, loops: dict[str, int], relu_backward: str) -> None:
    if relu_backward:
        module.relu_backward = select_numpy if module.__name__.endswith("numpy_") else select_torch
    for stage, n in loops.items():
        setattr(module, stage, with_loop(getattr(module, stage), n))


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
