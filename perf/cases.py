"""What one benchmark times: a stage, the whole step, the tutorial's step or a roofline probe,
of one backend at one problem size.

A ``Case`` is plain data, made at collection (its id is a baseline key: keep ids stable).
``bind`` makes the device arrays, the call to time and, for calls that mutate their
inputs, a setup that restores them on the device before every round; ``check`` verifies
the result against the float64 reference before anything is timed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import kernels
from kernels import check, reference, tutorial
from kernels.backend import train_step
from kernels.problem import DEFAULT_DTYPE, Problem

STEPS = ("train_step", "tutorial_step")
PROBES = ("peak_matmul", "peak_copy")


@dataclass(frozen=True)
class Case:
    stage: str          # a stage name, a step (STEPS) or a roofline probe (PROBES)
    backend: str
    problem: Problem

    @property
    def id(self) -> str:
        if self.stage in PROBES:
            parts = [self.stage, self.backend]
        elif self.stage in STEPS:
            parts = [self.problem.name, self.backend]
        else:
            parts = [self.problem.name, self.stage, self.backend]
        if self.problem.dtype != DEFAULT_DTYPE:
            parts.append(self.problem.dtype)
        return "-".join(parts)

    @property
    def group(self) -> str:
        suffix = "" if self.problem.dtype == DEFAULT_DTYPE else f" {self.problem.dtype}"
        if self.stage in PROBES:
            return f"roofline {self.stage}{suffix}"
        # The tutorial's step sits beside train_step, so the table compares them directly.
        stage = "train_step" if self.stage in STEPS else self.stage
        return f"{self.problem.name} {stage}{suffix}"


@dataclass
class Bound:
    """A case made runnable: ``target(*args)``, or ``target(*setup()[0])`` when it mutates."""

    backend: kernels.Backend
    target: Callable
    args: tuple
    setup: Callable[[], tuple[tuple, dict]] | None
    check: Callable[[], str | None]


@functools.lru_cache(maxsize=4)
def _values(problem: Problem) -> dict[str, np.ndarray]:
    return check.intermediates(problem)


def bind(case: Case) -> Bound:
    b = kernels.backend(case.backend, case.problem.dtype)
    if case.stage in PROBES:
        return _bind_probe(b, case.stage, case.problem)
    values = _values(case.problem)
    lr, dtype = case.problem.lr, case.problem.dtype
    if case.stage in STEPS:
        return _bind_step(b, values, lr, dtype, case.stage)
    if case.stage == "sgd_update":
        return _bind_update(b, values, lr, dtype)
    (host_args,) = check.calls(case.stage, values)
    args = tuple(b.asarray(a) for a in host_args)
    checked = getattr(b, case.stage)

    def verify() -> str | None:
        return check.mismatch(b.to_numpy(checked(*args)), check.expected(case.stage, host_args), dtype)

    return Bound(b, getattr(b.raw, case.stage), args, None, verify)


def _restorer(b: kernels.Backend, host: tuple[np.ndarray, ...]) -> Callable[[], tuple]:
    """Device copies of ``host`` and a function that resets them in place from device originals."""
    originals = tuple(b.asarray(a) for a in host)
    work = tuple(b.asarray(a) for a in host)

    def restore() -> tuple:
        for dst, src in zip(work, originals):
            b.raw.copy(dst, src)
        return work

    return restore


def _bind_update(b: kernels.Backend, values: dict[str, np.ndarray], lr: float, dtype: str) -> Bound:
    (w1, g1), (w2, g2) = check.calls("sgd_update", values)
    grads = b.asarray(g1), b.asarray(g2)
    restore = _restorer(b, (w1, w2))
    sgd = b.raw.sgd_update

    def update_both(w1_, g1_, w2_, g2_) -> None:
        sgd(w1_, g1_, lr)
        sgd(w2_, g2_, lr)

    def setup() -> tuple[tuple, dict]:
        w1_, w2_ = restore()
        return (w1_, grads[0], w2_, grads[1]), {}

    def verify() -> str | None:
        for w, g, dg in ((w1, g1, grads[0]), (w2, g2, grads[1])):
            dw = b.asarray(w)
            b.sgd_update(dw, dg, lr)
            why = check.mismatch(b.to_numpy(dw), check.expected("sgd_update", (w, g), lr), dtype)
            if why:
                return why
        return None

    return Bound(b, update_both, (), setup, verify)


def _bind_step(b: kernels.Backend, values: dict[str, np.ndarray], lr: float, dtype: str, stage: str) -> Bound:
    x, y = b.asarray(values["x"]), b.asarray(values["y"])
    restore = _restorer(b, (values["w1"], values["w2"]))
    if stage == "train_step":
        def step(w1, w2):
            return train_step(b.raw, (w1, w2), x, y, lr)
    else:
        literal = tutorial.STEPS[b.raw.FAMILY]

        def step(w1, w2):
            return literal(x, y, w1, w2, lr)

    def setup() -> tuple[tuple, dict]:
        return restore(), {}

    def verify() -> str | None:
        if stage == "train_step":
            b.train_step(restore(), x, y, lr)  # the checked entry point validates its arguments once
        w1, w2 = restore()
        loss = step(w1, w2)
        losses, ref_w1, ref_w2 = reference.train(values["x"], values["y"], values["w1"], values["w2"], lr, 1)
        loss = loss if isinstance(loss, float) else b.to_numpy(loss)  # the tutorial's torch step returns .item()
        for what, got, want in (("loss", loss, losses[0]), ("w1", b.to_numpy(w1), ref_w1), ("w2", b.to_numpy(w2), ref_w2)):
            why = check.mismatch(got, want, dtype)
            if why:
                return f"{what}: {why}"
        return None

    return Bound(b, step, (), setup, verify)


def _bind_probe(b: kernels.Backend, stage: str, problem: Problem) -> Bound:
    rng = np.random.default_rng(problem.seed)
    a = rng.standard_normal((problem.N, problem.D_in)).astype(problem.dtype)
    src = b.asarray(a)
    if stage == "peak_copy":
        dst = b.asarray(np.zeros_like(a))

        def verify() -> str | None:
            b.raw.copy(dst, src)
            return None if np.array_equal(b.to_numpy(dst), a) else "the copy differs from its source"

        return Bound(b, b.raw.copy, (dst, src), None, verify)
    w = rng.standard_normal((problem.D_in, problem.H)).astype(problem.dtype)
    weights, out = b.asarray(w), b.asarray(np.zeros((problem.N, problem.H), problem.dtype))

    def verify_matmul() -> str | None:
        b.raw.hidden(src, weights, out=out)
        rows = slice(0, 8)  # a full float64 reference of a roofline-sized matmul would cost seconds
        return check.mismatch(b.to_numpy(out)[rows], reference.f64(a[rows]) @ reference.f64(w), problem.dtype)

    return Bound(b, functools.partial(b.raw.hidden, out=out), (src, weights), None, verify_matmul)


def probe_problem(stage: str, on_host: bool, dtype: str) -> Problem:
    """The roofline probe's size: large enough to reach the device's plateau, small enough to be quick."""
    if stage == "peak_matmul":
        n = 2048 if on_host else 8192
        return Problem(n, n, n, 1, dtype=dtype, name=f"peak{n}")
    n = 8192 if on_host else 16384  # a copy of 256 MiB (host) or 1 GiB (device) in float32
    return Problem(n, n, 1, 1, dtype=dtype, name=f"copy{n}")


def memory_needed(problem: Problem, on_host: bool = True) -> int:
    """Bytes a stage or step benchmark of ``problem`` holds, with its reference check where that shares the device's memory."""
    return kernels.memory_needed(problem, check=True, on_host=on_host)


def free_memory(b: kernels.Backend) -> int | None:
    """Bytes free on the backend's device now, where that can be known."""
    if b.device_name == "cpu":
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if b.device_name.startswith("cuda"):
        import torch

        return torch.cuda.mem_get_info(b.device)[0]
    return None
