"""The workspace step (every stage in its out= form, writing into buffers allocated once) and the CPU-side
logic of its CUDA graph form: correctness against the float64 reference, nothing allocated per step,
the scratch= contract, bad input, and that every backend has all of it.

Shapes are named as in kernels.problem: N samples, D_in inputs, H hidden units, D_out outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import tracemalloc

import numpy as np
import pytest
import torch

import kernels
from kernels import DeviceUnavailableError, DTypeError, KernelError, ProblemError, ShapeError, check, reference
from kernels.backend import OUTPUTS, SCRATCHES, Workspace, train_step, workspace_axes, workspace_step
from kernels.contract import SCRATCH

BACKENDS = kernels.available_backends()
CPU_BACKENDS = [name for name in BACKENDS if not name.startswith(("torch-cuda", "torch-mps"))]
DTYPES = kernels.DTYPES
ODD_SIZES = ("1,1,1,1", "7,13,5,3", "1,17,1,2")
SIZES = ("seed", "compute", *ODD_SIZES)
STEPS = 50
# Every intermediate at least 96 KiB in float32: larger than numpy's fixed ufunc buffer (8192 elements).
BIG = "128,160,256,192"


def size_id(size: str) -> str:
    return size.replace(",", "x")


@functools.cache
def backend(name: str, dtype: str) -> kernels.Backend:
    return kernels.backend(name, dtype)


@functools.cache
def problem(size: str, dtype: str) -> kernels.Problem:
    return kernels.parse_problem(size, dtype)


@functools.cache
def reference_step(size: str, dtype: str) -> dict[str, np.ndarray]:
    """Every intermediate of one step in float64, and the weights after it (w1_next, w2_next)."""
    p = problem(size, dtype)
    inputs = p.inputs()
    v = reference.forward_backward(**inputs)
    v["w1_next"] = reference.sgd_update(v["w1"], v["grad_w1"], p.lr)
    v["w2_next"] = reference.sgd_update(v["w2"], v["grad_w2"], p.lr)
    return v


def on_device(b: kernels.Backend, size: str) -> tuple[tuple, object, object]:
    v = problem(size, b.dtype).inputs()
    return (b.asarray(v["w1"]), b.asarray(v["w2"])), b.asarray(v["x"]), b.asarray(v["y"])


# ---- correctness ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_workspace_step_matches_the_reference_in_every_intermediate(name: str, dtype: str, size: str) -> None:
    """One step: the loss, both updated weights and every intermediate left in the workspace."""
    b = backend(name, dtype)
    p = problem(size, dtype)
    ws = b.workspace(p.shape)
    params, x, y = on_device(b, size)
    w1, w2 = params
    loss = b.workspace_step(ws, params, x, y, p.lr)
    b.synchronize()
    assert loss is ws.loss, f"{name}: workspace_step did not return its loss buffer"
    assert params[0] is w1 and params[1] is w2
    ref = reference_step(size, dtype)
    got = {k: b.to_numpy(a) for k, a in ws.arrays().items() if a is not None}
    got |= {"w1_next": b.to_numpy(w1), "w2_next": b.to_numpy(w2)}
    for key in (*OUTPUTS.values(), "w1_next", "w2_next"):
        why = check.mismatch(got[key], ref[key], dtype)
        assert why is None, f"workspace_step on {name} in {dtype} at {size_id(size)}: {key}: {why}"
    inputs = problem(size, dtype).inputs()
    assert np.array_equal(b.to_numpy(x), inputs["x"]) and np.array_equal(b.to_numpy(y), inputs["y"]), "x or y was modified"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_workspace_step_trains_as_the_reference_does(name: str, dtype: str) -> None:
    """50 steps at the seed size, one workspace reused: the reference's losses and final weights."""
    b = backend(name, dtype)
    p = problem("seed", dtype)
    inputs = p.inputs()
    ref_losses, ref_w1, ref_w2 = reference.train(**inputs, lr=p.lr, steps=STEPS)
    (w1, w2), x, y = on_device(b, "seed")
    ws = b.workspace(p.shape)
    losses = [float(b.to_numpy(workspace_step(b.raw, ws, (w1, w2), x, y, p.lr))) for _ in range(STEPS)]
    rtol = {"float64": 1e-9, "float32": 1e-3}[dtype]
    np.testing.assert_allclose(losses, ref_losses, rtol=rtol, err_msg=f"workspace_step losses on {name} in {dtype}")
    assert ref_losses[-1] < 1e-2 * ref_losses[0], "the reference did not learn: the test would prove nothing"
    for key, got, want in (("w1", w1, ref_w1), ("w2", w2, ref_w2)):
        err = float(np.max(np.abs(b.to_numpy(got) - want)))
        assert err <= rtol * float(np.max(np.abs(want))), f"workspace_step on {name} in {dtype}: final {key} off by {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_the_workspace_holds_a_0d_loss_of_the_backend_s_kind(name: str, dtype: str) -> None:
    b = backend(name, dtype)
    ws = b.workspace(problem("seed", dtype).shape)
    assert b.raw.describe(ws.loss) == ((), dtype, b.device_name)
    assert b.raw.describe(ws.h) == ((64, 100), dtype, b.device_name)
    # Scratch only where the backend's stages use it, in the dtype they want.
    for stage, names in SCRATCHES.items():
        for field in names:
            array, want = getattr(ws, field), b.scratch_dtype(stage)
            assert (array is None) == (want is None), f"{name}: workspace.{field}"
            assert array is None or b.raw.describe(array)[1] == want


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stage", sorted(SCRATCH))
@pytest.mark.parametrize("name", BACKENDS)
def test_a_stage_given_scratch_gives_the_plain_stage_s_result(name: str, stage: str, dtype: str) -> None:
    """scratch= is only room to work in: the result is the reference's, and the inputs stay as they were."""
    b = backend(name, dtype)
    p = problem("7,13,5,3", dtype)
    values = check.intermediates(p)
    for call, args in enumerate(check.calls(stage, values)):
        inputs = [b.asarray(a) for a in args]
        scratch = b.empty(args[0].shape, b.scratch_dtype(stage))
        if stage == "sgd_update":
            b.sgd_update(*inputs, p.lr, scratch=scratch)
            got = inputs[0]
        else:
            out = b.asarray(np.full({"loss": (), "relu_backward": (p.N, p.H)}[stage], np.nan))
            got = getattr(b, stage)(*inputs, out=out, scratch=scratch)
            assert got is out, f"{stage} on {name}: did not return out="
        b.synchronize()
        why = check.mismatch(b.to_numpy(got), check.expected(stage, args, p.lr), dtype)
        assert why is None, f"{stage} with scratch= on {name} in {dtype} (call {call}): {why}"
        for i in range(1 if stage == "sgd_update" else 0, len(args)):
            assert np.array_equal(b.to_numpy(inputs[i]), args[i]), f"{stage} on {name}: argument {i} was modified"


# ---- nothing allocated per step --------------------------------------------------------------------


def numpy_peak_bytes(step) -> int:
    """The most memory traced at once while ``step`` runs, above what was traced before it."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def torch_allocations(step) -> list[tuple[str, int]]:
    """(operator, bytes) of every CPU allocation the torch profiler records while ``step`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    return [(e.name, e.cpu_memory_usage) for e in prof.events() if e.cpu_memory_usage > 0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_the_workspace_step_allocates_nothing_and_the_allocating_step_does(name: str, dtype: str) -> None:
    b = backend(name, dtype)
    p = problem(BIG, dtype)
    params, x, y = on_device(b, BIG)
    ws = b.workspace(p.shape)
    smallest = min(np.prod(s, dtype=int) for s in ((p.N, p.D_out), (p.H, p.D_out), (p.N, p.H))) * p.itemsize
    buffers = {k: id(a) for k, a in ws.arrays().items()}
    steps = {"workspace_step": lambda: workspace_step(b.raw, ws, params, x, y, 0.0),
             "train_step": lambda: train_step(b.raw, params, x, y, 0.0)}
    for label, step in steps.items():
        step()  # warm-up: lazy initialisation is not a per-step allocation
        if b.raw.FAMILY == "numpy":
            # Python objects (views, scalars) and numpy's own fixed ufunc buffer (8192 elements, for the
            # multiply by relu_backward's bool mask) stay far below the smallest intermediate.
            peak = numpy_peak_bytes(step)
            allocated = peak >= smallest
            detail = f"{peak} bytes at peak (smallest intermediate {smallest})"
        else:
            events = torch_allocations(step)
            allocated = bool(events)
            detail = str(events[:5])
        assert allocated == (label == "train_step"), f"{label} on {name} in {dtype}: {detail}"
    assert {k: id(a) for k, a in ws.arrays().items()} == buffers


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_a_large_out_loss_runs_in_blocks_exactly_and_allocates_nothing(name: str, dtype: str, monkeypatch) -> None:
    """From BLOCKED_FROM elements on, the out= loss sums blocks whose difference stays in cache (a short last block here)."""
    b = backend(name, dtype)
    shape = (1000, 1049)
    assert shape[0] * shape[1] >= b.raw.BLOCKED_FROM and shape[0] * shape[1] % b.raw.BLOCK
    rng = np.random.default_rng(1)
    a, c = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    y_pred, y, out, scratch = b.asarray(a), b.asarray(c), b.empty(()), b.empty(shape)
    blocked = []
    real = b.raw._blocked_loss
    monkeypatch.setattr(b.raw, "_blocked_loss", lambda *args: (blocked.append(1), real(*args))[1])
    assert b.loss(y_pred, y, out=out, scratch=scratch) is out and blocked == [1]
    why = check.mismatch(b.to_numpy(out), check.expected("loss", (a, c)), dtype)
    assert why is None, f"blocked out= loss on {name} in {dtype}: {why}"
    step = functools.partial(b.raw.loss, y_pred, y, out=out, scratch=scratch)
    if b.raw.FAMILY == "numpy":
        assert numpy_peak_bytes(step) < b.raw.BLOCK * a.itemsize
    else:
        assert torch_allocations(step) == []


# ---- bad input --------------------------------------------------------------------------------------


def one_line(exc: BaseException, *words: str) -> str:
    text = str(exc)
    assert isinstance(exc, KernelError) and "\n" not in text, text
    assert all(w in text for w in words), f"{text!r} lacks one of {words}"
    return text


@pytest.mark.parametrize("name", BACKENDS)
def test_a_wrong_scratch_is_refused_before_any_work(name: str) -> None:
    b = backend(name, "float32")
    v = check.intermediates(problem("2,3,4,5", "float32"))
    y_pred, y = b.asarray(v["y_pred"]), b.asarray(v["y"])
    out = b.asarray(np.full((), 7.0))
    with pytest.raises(ShapeError) as info:
        b.loss(y_pred, y, out=out, scratch=b.asarray(np.zeros((5, 2))))
    one_line(info.value, "loss", "scratch=", "(2, 5)", "(5, 2)")
    with pytest.raises(DTypeError) as info:
        b.loss(y_pred, y, out=out, scratch=backend(name, "float64").asarray(np.zeros((2, 5))))
    one_line(info.value, "loss", "scratch=", "float32", "float64")
    if b.scratch_dtype("relu_backward") not in (None, b.dtype):  # a module's own scratch dtype is checked too
        with pytest.raises(DTypeError) as info:
            b.relu_backward(b.asarray(v["grad_h_relu"]), b.asarray(v["h"]), scratch=b.asarray(np.zeros((2, 4))))
        one_line(info.value, "relu_backward", "scratch=", b.scratch_dtype("relu_backward"), "float32")
    with pytest.raises(ShapeError) as info:
        b.hidden(b.asarray(v["x"]), b.asarray(v["w1"]), scratch=b.asarray(np.zeros((2, 4))))
    one_line(info.value, "hidden", "scratch=", "loss")
    assert float(b.to_numpy(out)) == 7.0
    w = b.asarray(v["w1"])
    with pytest.raises(ShapeError):
        b.sgd_update(w, b.asarray(v["grad_w1"]), 1e-3, scratch=b.asarray(np.zeros((4, 3))))
    assert np.array_equal(b.to_numpy(w), v["w1"].astype("float32"))


@pytest.mark.parametrize("name", BACKENDS)
def test_a_workspace_that_does_not_fit_is_refused_before_any_work(name: str) -> None:
    b = backend(name, "float32")
    p = problem("2,3,4,5", "float32")
    params, x, y = on_device(b, "2,3,4,5")
    cases = [
        (b.workspace((2, 3, 4, 6)), ShapeError, ("workspace_step", "workspace.y_pred", "(2, 5)", "(2, 6)")),
        (backend(name, "float64").workspace(p.shape), DTypeError, ("workspace_step", "workspace.h", "float64", "float32")),
        ({"h": None}, ProblemError, ("workspace_step", "Workspace", "dict")),
    ]
    for ws, error, words in cases:
        with pytest.raises(error) as info:
            b.workspace_step(ws, params, x, y, p.lr)
        one_line(info.value, *words)
    with pytest.raises(ProblemError) as info:
        b.workspace_step(b.workspace(p.shape), params, x, y, float("nan"))
    one_line(info.value, "learning rate")
    assert np.array_equal(b.to_numpy(params[0]), p.inputs()["w1"]), "w1 changed although every call failed"


@pytest.mark.parametrize("shape", [(0, 1, 1, 1), (1, 1, 1), "seed", (1, 1.5, 1, 1), (1, True, 1, 1)],
                         ids=["N=0", "three dims", "a name", "D_in=1.5", "D_in=True"])
def test_a_bad_workspace_shape_is_one_line(shape) -> None:
    with pytest.raises(ProblemError) as info:
        backend("numpy", "float32").workspace(shape)
    one_line(info.value)


# ---- the CUDA graph form, where there is no CUDA ----------------------------------------------------


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_graph_step_says_why_it_cannot_run_here_and_changes_nothing(name: str) -> None:
    b = backend(name, "float32")
    p = problem("2,3,4,5", "float32")
    params, x, y = on_device(b, "2,3,4,5")
    why = b.graph_unavailable()
    assert why.startswith(f"{name}: ") and "CUDA" in why, why
    with pytest.raises(DeviceUnavailableError) as info:
        b.graph_step(b.workspace(p.shape), params, x, y, p.lr)
    assert str(info.value) == why
    assert np.array_equal(b.to_numpy(params[0]), p.inputs()["w1"])


def test_torch_capture_refuses_a_device_that_is_not_cuda() -> None:
    from kernels import torch_

    with pytest.raises(DeviceUnavailableError) as info:
        torch_.capture(torch.device("cpu"), lambda: None)
    one_line(info.value, "CUDA graphs need a CUDA device", "cpu")


def test_graph_step_replays_what_capture_returns_and_returns_the_loss_buffer(monkeypatch) -> None:
    """With an eager stand-in for capture (no GPU here), graph_step is a step of the workspace form."""
    from kernels import torch_

    calls = []
    monkeypatch.setattr(torch_, "capture_unavailable", lambda device: "")
    monkeypatch.setattr(torch_, "capture", lambda device, fn: (calls.append(device), fn)[1])
    b = kernels.backend("torch-cpu", "float64")
    p = problem("7,13,5,3", "float64")
    ws = b.workspace(p.shape)
    params, x, y = on_device(b, "7,13,5,3")
    step = b.graph_step(ws, params, x, y, p.lr)
    assert calls == [b.device]
    assert step() is ws.loss
    ref = reference_step("7,13,5,3", "float64")
    assert check.mismatch(b.to_numpy(ws.loss), ref["loss"], "float64") is None
    assert check.mismatch(b.to_numpy(params[0]), ref["w1_next"], "float64") is None


@pytest.mark.skipif(not any(n.startswith("torch-cuda") for n in BACKENDS), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_cuda_graph_replays_the_workspace_step(dtype: str) -> None:
    b = backend("torch-cuda", dtype)
    p = problem("seed", dtype)
    ws = b.workspace(p.shape)
    params, x, y = on_device(b, "seed")
    replay = b.graph_step(ws, params, x, y, p.lr)
    originals = problem("seed", dtype).inputs()
    for w, key in zip(params, ("w1", "w2")):  # capturing ran the step: start again from the drawn weights
        w.copy_(b.asarray(originals[key]))
    assert replay() is ws.loss
    b.synchronize()
    ref = reference_step("seed", dtype)
    for key, got in (("loss", ws.loss), ("w1_next", params[0]), ("w2_next", params[1]), ("grad_h", ws.grad_h)):
        why = check.mismatch(b.to_numpy(got), ref[key], dtype)
        assert why is None, f"graph_step on torch-cuda in {dtype}: {key}: {why}"


# ---- completeness ------------------------------------------------------------------------------------


MODULES = sorted(set(kernels._REGISTRY.values()))


@pytest.mark.parametrize("stage", kernels.STAGES)
def test_every_backend_module_gives_a_stage_the_same_signature(stage: str) -> None:
    signatures = {m: inspect.signature(getattr(importlib.import_module(m), stage)) for m in MODULES}
    assert len(set(map(str, signatures.values()))) == 1, signatures
    params = next(iter(signatures.values())).parameters
    assert ("scratch" in params) == (stage in SCRATCH), f"{stage}: scratch= is for {', '.join(SCRATCH)} only"
    assert ("out" in params) == (stage != "sgd_update")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_every_backend_has_every_form_of_the_step(name: str, dtype: str) -> None:
    b = backend(name, dtype)
    missing = [f for f in ("train_step", "workspace", "workspace_step", "graph_step", "graph_unavailable")
               if not callable(getattr(b, f, None))]
    assert not missing, f"{b!r} lacks {', '.join(missing)}"


def test_the_workspace_has_a_buffer_for_every_output_and_scratch_and_nothing_else() -> None:
    names = {f.name for f in dataclasses.fields(Workspace)} - {"shape"}
    wanted = set(OUTPUTS.values()) | {s for scratches in SCRATCHES.values() for s in scratches}
    assert names == wanted == set(workspace_axes())
    assert set(OUTPUTS) == {s for s in kernels.STAGES if s != "sgd_update"} and set(SCRATCHES) == set(SCRATCH)


def test_the_problem_model_knows_every_form() -> None:
    p = kernels.PRESETS["seed"]
    assert p.flops("relu_out") == p.flops("relu") and p.bytes("grad_w1_out") == p.bytes("grad_w1")
    for step in ("workspace_step", "graph_step", "tutorial_step"):
        assert (p.flops(step), p.bytes(step)) == (p.flops("train_step"), p.bytes("train_step"))
    with pytest.raises(kernels.UnknownNameError):
        p.flops("nothing_out")
