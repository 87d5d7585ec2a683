"""Interleaved in one process: train_step against the tutorial's step, and with one stage swapped at a time.

    PYTHONPATH=. OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python studies/step_probe.py [seed|compute]

Benchmarks of the two steps run minutes apart, and this VM drifts by tens of percent; here
every variant is called in turn, many times, so that drift hits them all alike.
"""

from __future__ import annotations

import statistics
import sys
import time
from types import SimpleNamespace

import torch

import kernels
from kernels import numpy_, torch_, tutorial
from kernels.backend import train_step


def masked_select(copy):
    """The tutorial's relu backward: a copy, then boolean-index assignment."""

    def relu_backward(grad, h):
        out = copy(grad)
        out[h < 0] = 0
        return out

    return relu_backward


TORCH = {
    "relu=clamp": {"relu": lambda h: h.clamp(min=0)},
    "loss=pow.sum": {"loss": lambda a, b: (a - b).pow(2).sum()},
    "grad_y_pred=2*(a-b)": {"grad_y_pred": lambda a, b: 2.0 * (a - b)},
    "relu_backward=clone+index": {"relu_backward": masked_select(torch.clone)},
    "sgd=w-=lr*g": {"sgd_update": lambda w, g, lr: w.sub_(lr * g)},
}
NUMPY = {"relu_backward=copy+index": {"relu_backward": masked_select(lambda a: a.copy())}}


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def probe(name: str, module, literal, swaps: dict, size: str) -> None:
    problem = kernels.PRESETS[size]
    b = kernels.backend(name)
    v = {k: b.asarray(a) for k, a in problem.inputs().items()}
    stages = {s: getattr(module, s) for s in kernels.STAGES}
    lr = 1e-30  # the weights stay put: every call does the same work
    calls = {}
    for label, swap in {"ours": {}, **swaps}.items():
        mixed = SimpleNamespace(**{**stages, **swap})
        calls[label] = lambda s=mixed: train_step(s, (v["w1"], v["w2"]), v["x"], v["y"], lr)
    calls["tutorial"] = lambda: literal(v["x"], v["y"], v["w1"], v["w2"], lr)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(15 if size != "seed" else 300):
        for label, call in calls.items():
            start = time.perf_counter()
            call()
            times[label].append(time.perf_counter() - start)
    ours = median_ms(times["ours"])
    print(f"{name} {size}: " + ", ".join(f"{k} {median_ms(t):.3f} ms ({median_ms(t) / ours:.2f}x)" for k, t in times.items()))


if __name__ == "__main__":
    torch.set_num_threads(1)
    size = sys.argv[1] if len(sys.argv) > 1 else "compute"
    probe("torch-cpu", torch_, tutorial.step_torch, TORCH, size)
    probe("numpy", numpy_, tutorial.step_numpy, NUMPY, size)
