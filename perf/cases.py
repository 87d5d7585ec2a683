"""What one benchmark times: a stage (allocating, or in its out= form), a form of the whole step
(the tutorial's code, train_step, the workspace step, its CUDA graph) or a roofline probe, of one
backend at one problem size.

A ``Case`` is plain data, made at collection (its id is a baseline key: keep ids stable).
``bind`` makes the device arrays, the call to time and, for calls that mutate their
inputs, a setup that restores them on the device before every round; ``check`` verifies
the result against the float64 reference before anything is timed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import kernels
from kernels import check, reference, tutorial
from kernels.backend import OUTPUTS, SCRATCHES, train_step, workspace_axes, workspace_step
from kernels.problem import DEFAULT_DTYPE, MATMUL_STAGES, OUT_SUFFIX, STAGES, Problem

STEPS = ("train_step", "tutorial_step", "workspace_step", "graph_step")
PROBES = ("peak_matmul", "peak_copy")
# Each stage in the form workspace_step calls it: out= (and scratch=) into preallocated buffers.
OUT_FORMS = tuple(f"{stage}{OUT_SUFFIX}" for stage in STAGES)


def base_stage(stage: str) -> str:
    """The stage an out= form is of ("relu_out" -> "relu"); any other name unchanged."""
    return stage.removesuffix(OUT_SUFFIX) if stage in OUT_FORMS else stage


def roofline_probe(stage: str) -> str | None:
    """The probe a benchmark's rate is a share of: matmuls and whole steps peak_matmul, elementwise stages peak_copy."""
    if base_stage(stage) in MATMUL_STAGES or stage in STEPS:
        return "peak_matmul"
    return "peak_copy" if base_stage(stage) in STAGES else None


@dataclass(frozen=True)
class Case:
    stage: str          # a stage name, its out= form (OUT_FORMS), a step (STEPS) or a roofline probe (PROBES)
    backend: str
    problem: Problem

    @property
    def id(self) -> str:
        if self.stage in PROBES:
            parts = [self.stage, self.backend]
        elif self.stage in STEPS:
            parts = [self.problem.name, self.backend]
        else:  # an out= form has its stage's id, under its own test function
            parts = [self.problem.name, base_stage(self.stage), self.backend]
        if self.problem.dtype != DEFAULT_DTYPE:
            parts.append(self.problem.dtype)
        return "-".join(parts)

    @property
    def group(self) -> str:
        suffix = "" if self.problem.dtype == DEFAULT_DTYPE else f" {self.problem.dtype}"
        if self.stage in PROBES:
            return f"roofline {self.stage}{suffix}"
        # Every form of the step sits beside train_step, and a stage's out= form beside the stage,
        # so the table compares them directly.
        stage = "train_step" if self.stage in STEPS else base_stage(self.stage)
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
def _reference_step(problem: Problem) -> tuple:
    """(losses, w1, w2) after one float64 step of the tutorial: what every form of the step is checked against."""
    values = _values(problem)
    return reference.train(values["x"], values["y"], values["w1"], values["w2"], problem.lr, 1)


@functools.lru_cache(maxsize=16)
def _values(problem: Problem) -> dict[str, np.ndarray]:
    return check.intermediates(problem)


def prepare(case: Case) -> None:
    """Make (and keep) the host data ``bind`` will need for ``case``: a zygote does it once for all its forks."""
    if case.stage in PROBES:
        _probe_host(case.stage, case.problem)
    else:
        _values(case.problem)


@functools.lru_cache(maxsize=4)
def _probe_host(stage: str, problem: Problem) -> tuple[np.ndarray, ...]:
    """A probe's host arrays: the copy's source and destination, or the matmul's two operands."""
    if stage == "peak_copy":
        # What is copied does not change how fast: a constant, not 64 M normal draws (seconds, in every process).
        a = np.full((problem.N, problem.D_in), 1.5, dtype=problem.dtype)
        return a, np.zeros_like(a)
    rng = np.random.default_rng(problem.seed)
    return (rng.standard_normal((problem.N, problem.D_in)).astype(problem.dtype),
            rng.standard_normal((problem.D_in, problem.H)).astype(problem.dtype))


def bind(case: Case) -> Bound:
    b = kernels.backend(case.backend, case.problem.dtype)
    if case.stage in PROBES:
        return _bind_probe(b, case.stage, case.problem)
    if case.stage == "graph_step" and b.graph_unavailable():
        import pytest  # here only: the report imports this module

        pytest.skip(b.graph_unavailable())
    values = _values(case.problem)
    lr, dtype = case.problem.lr, case.problem.dtype
    if case.stage in STEPS:
        return _bind_step(b, values, case.problem, case.stage)
    if case.stage in OUT_FORMS:
        return _bind_out(b, values, case.problem, base_stage(case.stage))
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


def _bind_update(b: kernels.Backend, values: dict[str, np.ndarray], lr: float, dtype: str,
                 scratch: tuple | None = None) -> Bound:
    """Both weights' updates, as a step makes them; with ``scratch`` (w1's, w2's), in their workspace form."""
    (w1, g1), (w2, g2) = check.calls("sgd_update", values)
    grads = b.asarray(g1), b.asarray(g2)
    restore = _restorer(b, (w1, w2))
    sgd = b.raw.sgd_update
    if scratch is None:
        def update_both(w1_, g1_, w2_, g2_) -> None:
            sgd(w1_, g1_, lr)
            sgd(w2_, g2_, lr)
    else:
        s1, s2 = scratch

        def update_both(w1_, g1_, w2_, g2_) -> None:
            sgd(w1_, g1_, lr, scratch=s1)
            sgd(w2_, g2_, lr, scratch=s2)

    def setup() -> tuple[tuple, dict]:
        w1_, w2_ = restore()
        return (w1_, grads[0], w2_, grads[1]), {}

    def verify() -> str | None:
        for w, g, dg, s in zip((w1, w2), (g1, g2), grads, scratch or (None, None)):
            dw = b.asarray(w)
            b.sgd_update(dw, dg, lr, scratch=s)
            why = check.mismatch(b.to_numpy(dw), check.expected("sgd_update", (w, g), lr), dtype)
            if why:
                return why
        return None

    return Bound(b, update_both, (), setup, verify)


def _bind_out(b: kernels.Backend, values: dict[str, np.ndarray], problem: Problem, stage: str) -> Bound:
    """``stage`` in its out= form: its buffers allocated once, as the workspace has them."""
    axes = workspace_axes()
    dims = dict(zip(("N", "D_in", "H", "D_out"), problem.shape))

    def buffer(name: str, dtype: str | None):
        return b.empty(tuple(dims[a] for a in axes[name]), dtype)

    # A scratch the backend does not use is None, as in its workspace.
    scratch = tuple(None if (dtype := b.scratch_dtype(stage)) is None else buffer(name, dtype)
                    for name in SCRATCHES.get(stage, ()))
    if stage == "sgd_update":
        return _bind_update(b, values, problem.lr, problem.dtype, scratch)
    (host_args,) = check.calls(stage, values)
    args = tuple(b.asarray(a) for a in host_args)
    kwargs = {"out": buffer(OUTPUTS[stage], b.dtype)} | ({"scratch": scratch[0]} if scratch else {})
    checked = getattr(b, stage)

    def verify() -> str | None:
        if checked(*args, **kwargs) is not kwargs["out"]:
            return "its out= form did not return the out= buffer"
        return check.mismatch(b.to_numpy(kwargs["out"]), check.expected(stage, host_args), problem.dtype)

    return Bound(b, functools.partial(getattr(b.raw, stage), **kwargs), args, None, verify)


def _bind_step(b: kernels.Backend, values: dict[str, np.ndarray], problem: Problem, stage: str) -> Bound:
    lr, dtype = problem.lr, problem.dtype
    x, y = b.asarray(values["x"]), b.asarray(values["y"])
    restore = _restorer(b, (values["w1"], values["w2"]))
    validate = None  # the checked entry point, called once: it validates the arguments
    if stage == "train_step":
        def step(w1, w2):
            return train_step(b.raw, (w1, w2), x, y, lr)

        def validate():
            b.train_step(restore(), x, y, lr)
    elif stage == "tutorial_step":
        literal = tutorial.STEPS[b.raw.FAMILY]

        def step(w1, w2):
            return literal(x, y, w1, w2, lr)
    elif stage == "workspace_step":
        ws = b.workspace(problem.shape)

        def step(w1, w2):
            return workspace_step(b.raw, ws, (w1, w2), x, y, lr)

        def validate():
            b.workspace_step(ws, restore(), x, y, lr)
    else:  # graph_step: captured on the very arrays every round restores in place
        replay = b.graph_step(b.workspace(problem.shape), restore(), x, y, lr)  # validates its arguments

        def step(w1, w2):
            return replay()

    def setup() -> tuple[tuple, dict]:
        return restore(), {}

    def verify() -> str | None:
        if validate is not None:
            validate()
        w1, w2 = restore()
        loss = step(w1, w2)
        losses, ref_w1, ref_w2 = _reference_step(problem)
        loss = loss if isinstance(loss, float) else b.to_numpy(loss)  # the tutorial's torch step returns .item()
        for what, got, want in (("loss", loss, losses[0]), ("w1", b.to_numpy(w1), ref_w1), ("w2", b.to_numpy(w2), ref_w2)):
            why = check.mismatch(got, want, dtype)
            if why:
                return f"{what}: {why}"
        return None

    return Bound(b, step, (), setup, verify)


def _bind_probe(b: kernels.Backend, stage: str, problem: Problem) -> Bound:
    if stage == "peak_copy":
        a, zeros = _probe_host(stage, problem)
        src, dst = b.asarray(a), b.asarray(zeros)

        def verify() -> str | None:
            b.raw.copy(dst, src)
            return None if np.array_equal(b.to_numpy(dst), a) else "the copy differs from its source"

        return Bound(b, b.raw.copy, (dst, src), None, verify)
    a, w = _probe_host(stage, problem)
    src, weights, out = b.asarray(a), b.asarray(w), b.asarray(np.zeros((problem.N, problem.H), problem.dtype))

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
