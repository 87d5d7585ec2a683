"""Every stage of every available backend against the float64 reference, and the contract around it.

Shapes are named as in kernels.problem: N samples, D_in inputs, H hidden units, D_out outputs.
Backends are those ``kernels.available_backends()`` finds, so torch-cuda is tested where a GPU
exists and simply absent elsewhere.
"""

from __future__ import annotations

import functools
import importlib

import numpy as np
import pytest
import torch

import kernels
from kernels import check, reference
from kernels.contract import SIGNATURES

BACKENDS = kernels.available_backends()
DTYPES = kernels.DTYPES
STAGES = kernels.STAGES
# Presets, then odd shapes (N, D_in, H, D_out): ones and primes, so nothing relies on a size being a multiple.
ODD_SIZES = ("1,1,1,1", "7,13,5,3", "1,17,1,2")
SIZES = ("seed", "compute", *ODD_SIZES)
# Stages that write a result array and so take ``out=`` (loss returns a scalar, sgd_update works in place).
OUT_STAGES = tuple(stage for stage in STAGES if SIGNATURES[stage][1])
# What kernels/__init__.py's docstring asks of a backend module.
MODULE_NAMES = (*STAGES, "open_device", "devices", "asarray", "to_numpy", "copy", "synchronize", "describe", "unwritable",
                "free_memory")
TRAIN_STEPS = 50


def size_id(size: str) -> str:
    return size.replace(",", "x")


@functools.cache
def backend(name: str, dtype: str) -> kernels.Backend:
    return kernels.backend(name, dtype)


@functools.cache
def problem(size: str, dtype: str) -> kernels.Problem:
    return kernels.parse_problem(size, dtype)


@functools.cache
def values(size: str, dtype: str) -> dict[str, np.ndarray]:
    return check.intermediates(problem(size, dtype))


@functools.cache
def expected(size: str, dtype: str, stage: str, call: int) -> np.ndarray:
    return check.expected(stage, check.calls(stage, values(size, dtype))[call], problem(size, dtype).lr)


def run_stage(b: kernels.Backend, stage: str, inputs, lr: float, **kwargs):
    """Call one checked stage; returns what it computed (for sgd_update: the updated weight)."""
    if stage == "sgd_update":
        getattr(b, stage)(*inputs, lr)
        return inputs[0]
    return getattr(b, stage)(*inputs, **kwargs)


def where(stage: str, name: str, dtype: str, size: str, call: int = 0) -> str:
    return f"{stage} on {name} in {dtype} at {size_id(size)} (call {call})"


# ---- every stage against the reference ------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("name", BACKENDS)
def test_stage_matches_reference(name: str, stage: str, dtype: str, size: str) -> None:
    """The result matches the float64 reference, has the backend's dtype and device, and no input changes."""
    b = backend(name, dtype)
    for call, args in enumerate(check.calls(stage, values(size, dtype))):
        at = where(stage, name, dtype, size, call)
        inputs = [b.asarray(a) for a in args]
        result = run_stage(b, stage, inputs, problem(size, dtype).lr)
        b.synchronize()
        why = check.mismatch(b.to_numpy(result), expected(size, dtype, stage, call), dtype)
        assert why is None, f"{at}: {why}"
        if stage != "loss":
            shape, result_dtype, device = b.raw.describe(result)
            assert (result_dtype, device) == (dtype, b.device_name), f"{at}: result is {result_dtype} on {device}"
        # sgd_update updates w (its first argument) in place; nothing else is ever modified.
        untouched = range(1 if stage == "sgd_update" else 0, len(args))
        for i in untouched:
            assert np.array_equal(b.to_numpy(inputs[i]), args[i]), f"{at}: argument {i} was modified"


@pytest.mark.parametrize("size", ("seed", *ODD_SIZES), ids=size_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stage", OUT_STAGES)
@pytest.mark.parametrize("name", BACKENDS)
def test_out_variant(name: str, stage: str, dtype: str, size: str) -> None:
    """``out=`` returns the buffer, fills all of it with the same result, and leaves the inputs alone."""
    b = backend(name, dtype)
    (args,) = check.calls(stage, values(size, dtype))
    at = where(stage, name, dtype, size)
    want = expected(size, dtype, stage, 0)
    inputs = [b.asarray(a) for a in args]
    plain = b.to_numpy(getattr(b, stage)(*inputs))
    out = b.asarray(np.full(want.shape, np.nan))  # NaN everywhere: an element left unwritten fails
    result = getattr(b, stage)(*inputs, out=out)
    b.synchronize()
    assert result is out, f"{at}: out= did not return the buffer"
    got = b.to_numpy(out)
    assert check.mismatch(got, want, dtype) is None, f"{at}: {check.mismatch(got, want, dtype)}"
    assert check.mismatch(got, plain, dtype) is None, (
        f"{at}: out= differs from the plain call: {check.mismatch(got, plain, dtype)}"
    )
    for i, (given, original) in enumerate(zip(inputs, args, strict=True)):
        assert np.array_equal(b.to_numpy(given), original), f"{at}: argument {i} was modified"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_relu_backward_at_zero(name: str, dtype: str) -> None:
    """The gradient passes where h == 0 exactly (also -0.0) and is zeroed only where h < 0."""
    b = backend(name, dtype)
    h = np.array([[0.0, -0.0, -1.0, 2.0], [-1e-30, 0.0, 3.0, -5.0]], dtype=dtype)
    grad = np.array([[1.5, -2.5, 3.5, -4.5], [5.5, -6.5, 7.5, 8.5]], dtype=dtype)
    want = np.array([[1.5, -2.5, 0.0, -4.5], [0.0, -6.5, 7.5, 0.0]])
    assert np.array_equal(check.expected("relu_backward", (grad, h)), want)
    plain = b.to_numpy(b.relu_backward(b.asarray(grad), b.asarray(h)))
    out = b.asarray(np.full(want.shape, np.nan))
    b.relu_backward(b.asarray(grad), b.asarray(h), out=out)
    for label, got in (("plain", plain), ("out=", b.to_numpy(out))):
        assert np.array_equal(got, want), f"relu_backward ({label}) on {name} in {dtype}: {got.tolist()} != {want.tolist()}"


# ---- the loss scalar and train_step ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_loss_is_backend_scalar(name: str, dtype: str) -> None:
    """loss returns a 0-d value of the backend's own kind: numpy 0-d/np.generic, torch 0-d tensor on its device."""
    b = backend(name, dtype)
    v = values("seed", dtype)
    value = b.loss(b.asarray(v["y_pred"]), b.asarray(v["y"]))
    if b.raw.FAMILY == "numpy":
        assert isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0, f"{name}: loss is {type(value)}"
        assert np.asarray(value).dtype == np.dtype(dtype)
    else:
        assert isinstance(value, torch.Tensor) and value.dim() == 0, (
            f"{name}: loss is {type(value)} {getattr(value, 'shape', '')}"
        )
        assert (str(value.dtype), str(value.device)) == (f"torch.{dtype}", b.device_name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_train_step_one_step(name: str, dtype: str) -> None:
    """train_step returns the loss before the update and updates w1 and w2 in place (same objects)."""
    b = backend(name, dtype)
    p = problem("seed", dtype)
    v = values("seed", dtype)
    w1, w2, x, y = (b.asarray(v[k]) for k in ("w1", "w2", "x", "y"))
    params = (w1, w2)
    loss = b.train_step(params, x, y, p.lr)
    b.synchronize()
    assert params[0] is w1 and params[1] is w2
    ref = reference.forward_backward(v["x"], v["y"], v["w1"], v["w2"])
    assert check.mismatch(b.to_numpy(loss), ref["loss"], dtype) is None, f"{name} {dtype}: loss"
    for w, key in ((w1, "w1"), (w2, "w2")):
        want = check.expected("sgd_update", (v[key], v[f"grad_{key}"]), p.lr)
        why = check.mismatch(b.to_numpy(w), want, dtype)
        assert why is None, f"train_step on {name} in {dtype}: {key} after one step: {why}"
    assert np.array_equal(b.to_numpy(x), v["x"]) and np.array_equal(b.to_numpy(y), v["y"]), "x or y was modified"


# float64 must agree with the float64 reference to rounding; float32 drifts over the steps.
TRAIN_RTOL = {"float64": 1e-9, "float32": 1e-3}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_train_matches_reference(name: str, dtype: str) -> None:
    """50 train_steps at the seed preset give the reference's losses and final weights."""
    b = backend(name, dtype)
    p = problem("seed", dtype)
    inputs = p.inputs()
    ref_losses, ref_w1, ref_w2 = reference.train(**inputs, lr=p.lr, steps=TRAIN_STEPS)
    w1, w2, x, y = (b.asarray(inputs[k]) for k in ("w1", "w2", "x", "y"))
    losses = [float(b.to_numpy(b.train_step((w1, w2), x, y, p.lr))) for _ in range(TRAIN_STEPS)]
    rtol = TRAIN_RTOL[dtype]
    np.testing.assert_allclose(losses, ref_losses, rtol=rtol, err_msg=f"train_step losses on {name} in {dtype}")
    assert ref_losses[-1] < 1e-2 * ref_losses[0], "the reference did not learn: the test would prove nothing"
    for key, got, want in (("w1", w1, ref_w1), ("w2", w2, ref_w2)):
        err = float(np.max(np.abs(b.to_numpy(got) - want)))
        limit = rtol * float(np.max(np.abs(want)))
        assert err <= limit, f"train_step on {name} in {dtype}: final {key} off by {err:.3g} > {limit:.3g}"


# ---- the manual gradients against autograd ----------------------------------------------------------


def autograd(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """loss, grad_w1 and grad_w2 of sum((relu(x w1) w2 - y)^2) by torch.autograd, in float64."""
    x, y = (torch.tensor(v[k], dtype=torch.float64) for k in ("x", "y"))
    w1, w2 = (torch.tensor(v[k], dtype=torch.float64, requires_grad=True) for k in ("w1", "w2"))
    loss = ((x @ w1).clamp(min=0) @ w2 - y).pow(2).sum()
    loss.backward()
    return {"loss": loss.detach().numpy(), "grad_w1": w1.grad.numpy(), "grad_w2": w2.grad.numpy()}


def backend_forward_backward(b: kernels.Backend, v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """loss, grad_w1 and grad_w2 from the backend's own stages, chained as train_step chains them."""
    x, y, w1, w2 = (b.asarray(v[k]) for k in ("x", "y", "w1", "w2"))
    h = b.hidden(x, w1)
    h_relu = b.relu(h)
    y_pred = b.output(h_relu, w2)
    grad_y_pred = b.grad_y_pred(y_pred, y)
    grad_h = b.relu_backward(b.grad_h_relu(grad_y_pred, w2), h)
    result = {"loss": b.loss(y_pred, y), "grad_w1": b.grad_w1(x, grad_h), "grad_w2": b.grad_w2(h_relu, grad_y_pred)}
    return {k: b.to_numpy(a) for k, a in result.items()}


@pytest.mark.parametrize("size", ("seed", "7,13,5,3"), ids=size_id)
@pytest.mark.parametrize("name", ("reference", *BACKENDS))
def test_gradients_match_autograd(name: str, size: str) -> None:
    """The tutorial's manual backward pass (reference and every backend) equals autograd in float64."""
    v = problem(size, "float64").inputs()
    want = autograd(v)
    got = reference.forward_backward(**v) if name == "reference" else backend_forward_backward(backend(name, "float64"), v)
    for key in ("loss", "grad_w1", "grad_w2"):
        why = check.mismatch(got[key], want[key], "float64")
        assert why is None, f"{key} of {name} at {size_id(size)} vs autograd: {why}"


# ---- completeness -------------------------------------------------------------------------------------


def test_contract_covers_every_stage() -> None:
    assert tuple(SIGNATURES) == STAGES


@pytest.mark.parametrize("module_name", sorted(set(kernels._REGISTRY.values())))
def test_module_exports_everything(module_name: str) -> None:
    """Every registered backend module exports the ten stages and the device/array helpers."""
    module = importlib.import_module(module_name)
    missing = [name for name in MODULE_NAMES if not callable(getattr(module, name, None))]
    assert not missing, f"{module_name} lacks {', '.join(missing)}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_backend_has_every_stage(name: str, dtype: str) -> None:
    b = backend(name, dtype)
    missing = [stage for stage in (*STAGES, "train_step") if not callable(getattr(b, stage, None))]
    assert not missing, f"{b!r} lacks {', '.join(missing)}"


# ---- check.mismatch itself ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", (np.nan, np.inf, -np.inf), ids=("nan", "inf", "-inf"))
def test_mismatch_rejects_non_finite(bad: float, dtype: str) -> None:
    ref = np.array([[1.0, 2.0], [3.0, 4.0]])
    actual = ref.copy()
    actual[1, 0] = bad
    why = check.mismatch(actual.astype(dtype), ref, dtype)
    assert why is not None and "non-finite" in why and "\n" not in why, why
    assert check.mismatch(np.asarray(bad), np.asarray(1.0), dtype) is not None  # a 0-d value too


@pytest.mark.parametrize("actual_shape, ref_shape", [((2, 3), (3, 2)), ((6,), (2, 3)), ((1,), ()), ((2, 3, 1), (2, 3))])
def test_mismatch_rejects_wrong_shape(actual_shape, ref_shape) -> None:
    why = check.mismatch(np.zeros(actual_shape), np.zeros(ref_shape), "float64")
    assert why is not None and str(ref_shape) in why and str(actual_shape) in why, why


@pytest.mark.parametrize("dtype", DTYPES)
def test_mismatch_tolerance_edge(dtype: str) -> None:
    """The limit is TOLERANCE x max |reference|: just below passes, just above fails, at any index."""
    tol = check.TOLERANCE[dtype]
    ref = np.array([[4.0, -0.5], [0.0, 1.0]])  # max |reference| = 4
    for factor, ok in ((0.99, True), (1.01, False)):
        actual = ref.copy()
        actual[1, 0] += factor * tol * 4.0  # off where the reference is 0: the scale is still the max
        why = check.mismatch(actual, ref, dtype)
        assert (why is None) == ok, f"{dtype}: error {factor} x limit gave {why!r}"
    assert check.mismatch(np.float64(1.0 + 0.99 * tol), np.float64(1.0), dtype) is None
    assert check.mismatch(np.float64(1.0 + 1.01 * tol), np.float64(1.0), dtype) is not None
    # A zero reference is compared absolutely (scale 1).
    assert check.mismatch(np.full(3, 0.99 * tol), np.zeros(3), dtype) is None
    assert check.mismatch(np.full(3, 1.01 * tol), np.zeros(3), dtype) is not None


@pytest.mark.parametrize("dtype", kernels.DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_relu_backward_mask_is_exactly_h_below_zero_down_to_subnormals(name, dtype):
    # The fast forms multiply by a mask (numpy) or threshold just below -0.0 (torch): the smallest
    # negative and positive subnormals must land on the right side, as in the tutorial's grad_h[h < 0] = 0.
    b = kernels.backend(name, dtype)
    tiny = np.nextafter(np.zeros((), dtype), np.ones((), dtype))
    h = np.array([[-tiny, tiny, -0.0, 0.0, -1.0, 1.0]], dtype=dtype)
    g = np.arange(1, 7, dtype=dtype).reshape(1, 6)
    got = b.to_numpy(b.relu_backward(b.asarray(g), b.asarray(h)))
    assert got.tolist() == [[0.0, 2.0, 3.0, 4.0, 0.0, 6.0]], (name, dtype, got)
