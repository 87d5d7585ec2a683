"""The memory estimate that refuses a size before allocating, against what a run really holds.

Each run is a fresh process; its peak resident size after the imports and a warm-up is compared
with ``kernels.memory_needed``: never above it, and not so far below that sizes that fit are refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import kernels
from perf import cases, params

REPO = Path(__file__).resolve().parents[1]
SIZE = "1024,1536,768,512"  # every dim different, compute-sized: a run takes seconds

# Prints the growth of the peak resident size (bytes) over one run, from the size after the imports
# and a warm-up (the peak is reset there: Linux's clear_refs): the perf suite's bind, reference
# check and a few calls of every case ("check"), or python -m kernels.train ("train").
PEAK = textwrap.dedent("""
    import contextlib, io, sys
    import numpy as np, torch
    import kernels
    from perf import cases, params
    mode, name, size, dtype = sys.argv[1:]
    problem = kernels.parse_problem(size, dtype)

    def status(key):
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key + ":"))

    torch.ones(8, 8) @ torch.ones(8, 8), np.ones((8, 8)) @ np.ones((8, 8))
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = status("VmRSS")
    if mode == "train":
        from kernels.train import main
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--backend", name, "--size", size, "--dtype", dtype, "--steps", "3"]) == 0
    else:
        for stage in (*kernels.STAGES, *(s for s in cases.STEPS if s != "graph_step")):  # no CUDA graph on a CPU
            bound = cases.bind(cases.Case(stage, name, problem))
            assert bound.check() is None, stage
            for _ in range(2):
                bound.target(*(bound.setup()[0] if bound.setup else bound.args))
            del bound
    print(status("VmHWM") - base)
""")


def can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not can_reset_peak(), reason="needs Linux's /proc/self/clear_refs to reset the peak resident size")
@pytest.mark.parametrize("name, mode, dtype", [("numpy", "check", "float32"), ("torch-cpu", "check", "float64"),
                                               ("numpy", "train", "float64"), ("torch-cpu", "train", "float32")])
def test_the_estimate_covers_what_a_run_holds(name: str, mode: str, dtype: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PEAK, mode, name, SIZE, dtype], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    measured = int(proc.stdout.split()[-1])
    estimate = kernels.memory_needed(kernels.parse_problem(SIZE, dtype), check=mode == "check", on_host=True)
    what = f"{name} {mode} {dtype}: held {measured / 2**20:.0f} MiB, estimated {estimate / 2**20:.0f} MiB"
    assert measured <= estimate, what
    assert measured >= estimate / 3, f"{what}: refuses sizes that fit"


def test_the_estimate_grows_with_every_dim_and_counts_the_reference_on_the_host() -> None:
    base = kernels.parse_problem("64,128,32,16")
    for dim in range(4):
        sizes = [64, 128, 32, 16]
        sizes[dim] *= 4
        assert kernels.memory_needed(kernels.Problem(*sizes)) > kernels.memory_needed(base)
    device_only = kernels.memory_needed(base, check=True, on_host=False)
    assert device_only <= kernels.memory_needed(base, check=False) < kernels.memory_needed(base, check=True)
    assert kernels.memory_needed(base.with_dtype("float64")) > kernels.memory_needed(base)


def test_the_perf_suite_skips_on_the_same_estimate() -> None:
    b = kernels.backend("numpy")
    assert params.cannot_run(cases.Case("relu", "numpy", kernels.PRESETS["compute"]), b) == ""
    huge = kernels.Problem(10**6, 10**6, 10**6, 10**6)
    why = params.cannot_run(cases.Case("relu", "numpy", huge), b)
    assert why.startswith(f"size {huge.name} needs about ") and "free; choose a smaller size" in why
