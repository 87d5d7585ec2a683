"""Test-only pytest plugin: make chosen stages slower by a measured share of their own time.

    PERF_SLOWDOWN="relu:25%,grad_w1:10%" pytest perf -p tests.plugins.slowdown

Each named stage of every backend module is wrapped: the wrapper times the real call, then
spins on the clock for the given share of that time, so the injected extra work scales with
whatever the call costs at any size. CPU backends only (the spin is on the host). Used by
the gate's calibration (python -m perf.calibrate); nothing of it touches kernels/ on disk.
"""

from __future__ import annotations

import functools
import importlib
import os
import time

import kernels
from perf.gate import parse_threshold

perf_counter = time.perf_counter


def slowed(fn, share: float, overhead: float = 0.0):
    """``fn`` followed by a spin of ``share`` times its own duration, less the wrapper's own cost."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = perf_counter()
        result = fn(*args, **kwargs)
        until = start + (perf_counter() - start) * (1 + share) - overhead
        while perf_counter() < until:
            pass
        return result

    wrapper.slowdown = share
    return wrapper


def wrapper_overhead() -> float:
    """Seconds the wrapper itself adds to a call when it spins for nothing (its clock reads and frame)."""

    def nothing():
        return None

    wrapped = slowed(nothing, 0.0)
    best = float("inf")
    for _ in range(200):
        start = perf_counter()
        for _ in range(100):
            wrapped()
        middle = perf_counter()
        for _ in range(100):
            nothing()
        best = min(best, (middle - start - (perf_counter() - middle)) / 100)
    return max(best, 0.0)


def install(spec: str) -> dict[str, float]:
    """Wrap the stages named in ``spec`` ('stage:share,...') in every registered backend module."""
    shares = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        stage, _, share = item.partition(":")
        if stage not in kernels.STAGES:
            raise ValueError(f"PERF_SLOWDOWN: unknown stage {stage!r}; valid: {', '.join(kernels.STAGES)}")
        shares[stage] = parse_threshold(share)
    overhead = wrapper_overhead() if shares else 0.0
    for module_name in dict.fromkeys(kernels._REGISTRY.values()):
        module = importlib.import_module(module_name)
        for stage, share in shares.items():
            setattr(module, stage, slowed(getattr(module, stage), share, overhead))
    return shares


def pytest_configure(config) -> None:
    shares = install(os.environ.get("PERF_SLOWDOWN", ""))
    config.stash_slowdown = shares


def pytest_report_header(config) -> str:
    return f"slowdown injected: {getattr(config, 'stash_slowdown', {})}"
