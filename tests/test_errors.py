"""Bad input raises its documented type (kernels/errors.py) with a one-line message, before any work.

Each message must name what was wrong and what is accepted; each error is also the built-in type
a caller would expect (``except ValueError`` keeps working).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import kernels
from kernels import (
    DeviceUnavailableError,
    DTypeError,
    KernelError,
    Problem,
    ProblemError,
    ReadOnlyError,
    ShapeError,
    TooLargeError,
    UnknownNameError,
    check,
)
from kernels.contract import SIGNATURES

BACKENDS = kernels.available_backends()
STAGES = kernels.STAGES
OUT_STAGES = tuple(stage for stage in STAGES if SIGNATURES[stage][1])
# N, D_in, H, D_out all different, so every shape names its dims unambiguously.
SMALL = "2,3,4,5"
BAD_LRS = (math.nan, math.inf, -math.inf, "0.1", None, True, [1e-6], 10**400, -(10**400), np.float64("nan"), 1e-6j)
BUILTIN = {
    UnknownNameError: ValueError,
    DeviceUnavailableError: RuntimeError,
    ShapeError: ValueError,
    DTypeError: TypeError,
    ProblemError: ValueError,
    ReadOnlyError: ValueError,
    TooLargeError: MemoryError,
}


def lr_id(lr) -> str:
    text = repr(lr)
    return text if len(text) < 20 else f"{text[:8]}...{len(text)}chars"


@functools.cache
def backend(name: str, dtype: str = "float32") -> kernels.Backend:
    return kernels.backend(name, dtype)


@functools.cache
def values(dtype: str) -> dict[str, np.ndarray]:
    return check.intermediates(kernels.parse_problem(SMALL, dtype))


def stage_args(b: kernels.Backend, stage: str) -> list:
    """Valid arguments of ``stage`` on ``b`` (sgd_update: w1 and grad_w1)."""
    return [b.asarray(a) for a in check.calls(stage, values(b.dtype))[0]]


def message(excinfo: pytest.ExceptionInfo, *names: str) -> str:
    """The error's message, checked: one line, the built-in base class, and every one of ``names`` in it."""
    exc = excinfo.value
    text = str(exc)
    assert isinstance(exc, KernelError) and isinstance(exc, BUILTIN[type(exc)]), type(exc).__mro__
    assert "\n" not in text, f"multi-line message: {text!r}"
    missing = [name for name in names if name not in text]
    assert not missing, f"message {text!r} does not mention {missing}"
    return text


def call(b: kernels.Backend, stage: str, args, **kwargs):
    if stage == "sgd_update":
        return b.sgd_update(*args, kwargs.pop("lr", 1e-3), **kwargs)
    return getattr(b, stage)(*args, **kwargs)


def snapshot(b: kernels.Backend, arrays) -> list[np.ndarray]:
    return [b.to_numpy(a).copy() for a in arrays]


def assert_unchanged(b: kernels.Backend, arrays, before, what: str) -> None:
    for i, (a, old) in enumerate(zip(arrays, before, strict=True)):
        assert np.array_equal(b.to_numpy(a), old, equal_nan=True), f"{what}: argument {i} changed although the call failed"


# ---- names: backends, dtypes, presets and sizes ---------------------------------------------------


@pytest.mark.parametrize("name", ("cupy", "numpyy", "", "torch", "cuda", "torch-tpu", "NUMPY"))
def test_unknown_backend(name: str) -> None:
    with pytest.raises(UnknownNameError) as excinfo:
        kernels.backend(name)
    message(excinfo, repr(name), *kernels.known_backends())


@pytest.mark.parametrize("name", (None, 3, b"numpy", ["numpy"]), ids=repr)
def test_backend_name_not_a_string(name) -> None:
    with pytest.raises(UnknownNameError) as excinfo:
        kernels.backend(name)
    message(excinfo, "string", repr(name), *kernels.known_backends())


@pytest.mark.parametrize("dtype", ("float16", "int32", "f32", ""))
def test_unknown_dtype(dtype: str) -> None:
    with pytest.raises(UnknownNameError) as excinfo:
        kernels.backend("numpy", dtype)
    message(excinfo, repr(dtype), *kernels.DTYPES)
    with pytest.raises(UnknownNameError) as excinfo:
        Problem(2, 3, 4, 5, dtype=dtype)
    message(excinfo, repr(dtype), *kernels.DTYPES)


@pytest.mark.parametrize("spec", ("huge", "", "1,2,3", "1,2,3,4,5", "1,2,x,4", "1.5,2,3,4", "seed,"))
def test_unknown_size(spec: str) -> None:
    with pytest.raises(UnknownNameError) as excinfo:
        kernels.parse_problem(spec)
    message(excinfo, repr(spec), *kernels.PRESETS, "N,D_in,H,D_out")


@pytest.mark.parametrize("spec", ("--1,2,3,4", "\u00b2,2,3,4"))
def test_malformed_size_is_a_kernel_error(spec: str) -> None:
    with pytest.raises(KernelError) as excinfo:
        kernels.parse_problem(spec)
    message(excinfo, repr(spec))


# ---- devices -------------------------------------------------------------------------------------------


def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.parametrize(
    "name, present, why",
    [
        ("torch-cuda", lambda: cuda_count() > 0, "CUDA is not available"),
        ("torch-cuda:7", lambda: cuda_count() > 7, "CUDA"),
        ("torch-mps", lambda: torch.backends.mps.is_available(), "MPS is not available"),
    ],
    ids=("torch-cuda", "torch-cuda:7", "torch-mps"),
)
def test_absent_device(name: str, present, why: str) -> None:
    if present():
        pytest.skip(f"{name} exists on this machine")
    if name == "torch-cuda:7" and cuda_count():
        why = f"this machine has {cuda_count()}"
    with pytest.raises(DeviceUnavailableError) as excinfo:
        kernels.backend(name)
    message(excinfo, name, why)
    assert name not in kernels.available_backends()


@pytest.mark.parametrize("name", ("torch-cpu:0", "torch-cuda:x", "torch-cuda:-1", "torch-mps:0"))
def test_malformed_device(name: str) -> None:
    with pytest.raises(DeviceUnavailableError) as excinfo:
        kernels.backend(name)
    message(excinfo, name)


# ---- shapes ------------------------------------------------------------------------------------------


def shape_of(b: kernels.Backend, a) -> tuple[int, ...]:
    return b.raw.describe(a)[0]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("name", BACKENDS)
def test_shape_mismatch(name: str, stage: str) -> None:
    """A dim that disagrees between the arguments: the message names the stage and both shapes."""
    b = backend(name)
    args = stage_args(b, stage)
    named = SIGNATURES[stage][0]
    if len(named) == 1:  # relu: the only possible mismatch is a wrong number of dims
        bad = [b.asarray(np.zeros(3, dtype=b.dtype))]
        with pytest.raises(ShapeError) as excinfo:
            call(b, stage, bad)
        message(excinfo, stage, "(3,)", "2-D")
        return
    # Grow, in the second argument, every dim the first one already fixes.
    first_axes, (_, *second_axes) = named[0][1:], named[1]
    shape = tuple(n + 1 if axis in first_axes else n for axis, n in zip(second_axes, shape_of(b, args[1]), strict=True))
    args[1] = b.asarray(np.zeros(shape, dtype=b.dtype))
    before = snapshot(b, args)
    with pytest.raises(ShapeError) as excinfo:
        call(b, stage, args)
    message(excinfo, stage, str(shape_of(b, args[0])), str(shape))
    assert_unchanged(b, args, before, stage)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("name", BACKENDS)
def test_not_2d(name: str, stage: str) -> None:
    b = backend(name)
    args = stage_args(b, stage)
    args[0] = b.asarray(np.zeros((2, 3, 4), dtype=b.dtype))
    with pytest.raises(ShapeError) as excinfo:
        call(b, stage, args)
    message(excinfo, stage, "(2, 3, 4)", "2-D")


@pytest.mark.parametrize("stage", OUT_STAGES)
@pytest.mark.parametrize("name", BACKENDS)
def test_mismatch_leaves_out_untouched(name: str, stage: str) -> None:
    """A bad argument fails before the out= buffer is written."""
    b = backend(name)
    args = stage_args(b, stage)
    out = b.asarray(np.full(b.raw.describe(getattr(b, stage)(*args))[0], 7.0))
    args[-1] = b.asarray(np.zeros((1, 1, 1), dtype=b.dtype))
    with pytest.raises(ShapeError):
        call(b, stage, args, out=out)
    assert (b.to_numpy(out) == 7.0).all(), f"{stage}: out= was written although the call failed"


@pytest.mark.parametrize("stage", OUT_STAGES)
@pytest.mark.parametrize("name", BACKENDS)
def test_wrong_out_shape(name: str, stage: str) -> None:
    b = backend(name)
    args = stage_args(b, stage)
    right = b.raw.describe(getattr(b, stage)(*args))[0]
    for wrong in ((right[0] + 1, right[1]), right[::-1], (right[0] * right[1],)):
        out = b.asarray(np.full(wrong, 7.0))
        with pytest.raises(ShapeError) as excinfo:
            call(b, stage, args, out=out)
        message(excinfo, stage, "out=", str(right), str(wrong))
        assert (b.to_numpy(out) == 7.0).all()


@pytest.mark.parametrize("name", BACKENDS)
def test_wrong_out_dtype(name: str) -> None:
    b = backend(name, "float32")
    args = stage_args(b, "hidden")
    out = backend(name, "float64").asarray(np.zeros((2, 4)))
    with pytest.raises(DTypeError) as excinfo:
        b.hidden(*args, out=out)
    message(excinfo, "hidden", "float64", "float32")


@pytest.mark.filterwarnings("ignore:An output with one or more elements was resized")
@pytest.mark.parametrize("name", BACKENDS)
def test_wrong_out_passed_positionally(name: str) -> None:
    b = backend(name)
    args = stage_args(b, "hidden")
    with pytest.raises(ShapeError) as excinfo:
        b.hidden(*args, b.asarray(np.zeros((5, 5))))
    message(excinfo, "hidden", "(2, 4)", "(5, 5)")


# ---- dtypes and array types ------------------------------------------------------------------------


@pytest.mark.parametrize("dtypes", (("float32", "float64"), ("float64", "float32")), ids=("f64-to-f32", "f32-to-f64"))
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("name", BACKENDS)
def test_mixed_dtype(name: str, stage: str, dtypes: tuple[str, str]) -> None:
    """Any one argument in the other dtype: DTypeError naming the stage and both dtypes."""
    ours, theirs = dtypes
    b, other = backend(name, ours), backend(name, theirs)
    for i in range(len(SIGNATURES[stage][0])):
        args = stage_args(b, stage)
        args[i] = other.asarray(b.to_numpy(args[i]))
        before = snapshot(b, args)
        with pytest.raises(DTypeError) as excinfo:
            call(b, stage, args)
        message(excinfo, stage, SIGNATURES[stage][0][i][0], theirs, ours)
        assert_unchanged(b, args, before, stage)


def foreign(name: str, a: np.ndarray):
    """``a`` as the other library's array: a torch tensor for numpy, a numpy array for torch."""
    return torch.from_numpy(a.copy()) if backend(name).raw.FAMILY == "numpy" else a.copy()


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("name", BACKENDS)
def test_foreign_array_type(name: str, stage: str) -> None:
    """A numpy array to a torch backend, or a torch tensor to numpy: DTypeError naming both types."""
    b = backend(name)
    accepted = "numpy.ndarray" if b.raw.FAMILY == "numpy" else "torch.Tensor"
    given = "torch.Tensor" if b.raw.FAMILY == "numpy" else "numpy.ndarray"
    for i in range(len(SIGNATURES[stage][0])):
        args = stage_args(b, stage)
        args[i] = foreign(name, b.to_numpy(args[i]))
        before = snapshot(b, [a for a in args if a is not args[i]])
        with pytest.raises(DTypeError) as excinfo:
            call(b, stage, args)
        message(excinfo, accepted, given)
        assert_unchanged(b, [a for a in args if a is not args[i]], before, stage)


@pytest.mark.parametrize("name", BACKENDS)
def test_foreign_out_and_train_step(name: str) -> None:
    b = backend(name)
    args = stage_args(b, "hidden")
    with pytest.raises(DTypeError):
        b.hidden(*args, out=foreign(name, np.zeros((2, 4), dtype="float32")))
    v = values("float32")
    with pytest.raises(DTypeError):
        b.train_step((b.asarray(v["w1"]), b.asarray(v["w2"])), foreign(name, v["x"]), b.asarray(v["y"]), 1e-3)


@pytest.mark.skipif(cuda_count() == 0, reason="needs a CUDA device")
def test_cpu_tensor_to_cuda_backend() -> None:
    b = backend("torch-cuda")
    args = stage_args(b, "hidden")
    args[0] = args[0].cpu()
    with pytest.raises(DTypeError) as excinfo:
        b.hidden(*args)
    message(excinfo, "hidden", "cpu", "cuda")


# ---- problems -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes, dim",
    [
        ((0, 1, 2, 3), "N"),
        ((1, -1, 2, 3), "D_in"),
        ((1, 2, 0, 3), "H"),
        ((1, 2, 3, -4), "D_out"),
        ((1.5, 2, 3, 4), "N"),
        ((True, 2, 3, 4), "N"),
        (("1", 2, 3, 4), "N"),
    ],
    ids=("N=0", "D_in=-1", "H=0", "D_out=-4", "N=1.5", "N=True", "N='1'"),
)
def test_problem_bad_size(sizes, dim: str) -> None:
    with pytest.raises(ProblemError) as excinfo:
        Problem(*sizes)
    message(excinfo, dim, "positive integer")


@pytest.mark.parametrize("spec, dim", [("0,1,2,3", "N"), ("-1,2,3,4", "N"), ("1,2,3,0", "D_out"), ("1x0x3x4", "D_in")])
def test_parse_problem_bad_size(spec: str, dim: str) -> None:
    with pytest.raises(ProblemError) as excinfo:
        kernels.parse_problem(spec)
    message(excinfo, repr(spec), dim, "positive integer")


# ---- learning rates ---------------------------------------------------------------------------------


def lr_words(lr) -> tuple[str, ...]:
    return ("learning rate", "finite", repr(lr)[:20])


@pytest.mark.parametrize("lr", BAD_LRS, ids=lr_id)
def test_problem_bad_lr(lr) -> None:
    with pytest.raises(ProblemError) as excinfo:
        Problem(2, 3, 4, 5, lr=lr)
    message(excinfo, *lr_words(lr))


@pytest.mark.parametrize("lr", BAD_LRS, ids=lr_id)
@pytest.mark.parametrize("name", BACKENDS)
def test_sgd_update_bad_lr(name: str, lr) -> None:
    """A bad lr fails before w is touched, passed positionally or by keyword."""
    b = backend(name)
    for by_keyword in (False, True):
        w, grad = stage_args(b, "sgd_update")
        before = snapshot(b, (w, grad))
        with pytest.raises(ProblemError) as excinfo:
            b.sgd_update(w, grad, lr=lr) if by_keyword else b.sgd_update(w, grad, lr)
        message(excinfo, *lr_words(lr))
        assert_unchanged(b, (w, grad), before, "sgd_update")


@pytest.mark.parametrize("name", BACKENDS)
def test_sgd_update_missing_lr(name: str) -> None:
    b = backend(name)
    w, grad = stage_args(b, "sgd_update")
    before = snapshot(b, (w, grad))
    with pytest.raises(ProblemError) as excinfo:
        b.sgd_update(w, grad)
    message(excinfo, "learning rate")
    assert_unchanged(b, (w, grad), before, "sgd_update")


def step_args(b: kernels.Backend) -> tuple[tuple, object, object]:
    v = values(b.dtype)
    return (b.asarray(v["w1"]), b.asarray(v["w2"])), b.asarray(v["x"]), b.asarray(v["y"])


@pytest.mark.parametrize("lr", BAD_LRS, ids=lr_id)
@pytest.mark.parametrize("name", BACKENDS)
def test_train_step_bad_lr(name: str, lr) -> None:
    b = backend(name)
    params, x, y = step_args(b)
    before = snapshot(b, (*params, x, y))
    with pytest.raises(ProblemError) as excinfo:
        b.train_step(params, x, y, lr)
    message(excinfo, *lr_words(lr))
    assert_unchanged(b, (*params, x, y), before, "train_step")


@pytest.mark.parametrize("which", ("w1", "w2", "x", "y"))
@pytest.mark.parametrize("name", BACKENDS)
def test_train_step_bad_shape(name: str, which: str) -> None:
    """One argument with a grown dim: ShapeError naming train_step and the shapes; no weight changes."""
    b = backend(name)
    params, x, y = step_args(b)
    arrays = {"w1": params[0], "w2": params[1], "x": x, "y": y}
    good = b.to_numpy(arrays[which])
    arrays[which] = b.asarray(np.zeros((good.shape[0] + 1, good.shape[1]), dtype=b.dtype))
    before = snapshot(b, arrays.values())
    with pytest.raises(ShapeError) as excinfo:
        b.train_step((arrays["w1"], arrays["w2"]), arrays["x"], arrays["y"], 1e-3)
    message(excinfo, "train_step", which, str((good.shape[0] + 1, good.shape[1])))
    assert_unchanged(b, arrays.values(), before, "train_step")


@pytest.mark.parametrize("name", BACKENDS)
def test_train_step_mixed_dtype(name: str) -> None:
    b, other = backend(name, "float32"), backend(name, "float64")
    params, x, y = step_args(b)
    y = other.asarray(b.to_numpy(y))
    before = snapshot(b, params)
    with pytest.raises(DTypeError) as excinfo:
        b.train_step(params, x, y, 1e-3)
    message(excinfo, "train_step", "y", "float64", "float32")
    assert_unchanged(b, params, before, "train_step")


def test_a_huge_lr_is_named_in_a_short_line() -> None:
    with pytest.raises(ProblemError) as excinfo:
        Problem(2, 3, 4, 5, lr=10**400)
    assert len(message(excinfo, "learning rate", "1000000", "401 characters")) < 200


@pytest.mark.parametrize("params", [(1, 2, 3), (), None, "w1w2"], ids=repr)
@pytest.mark.parametrize("name", BACKENDS)
def test_train_step_params_not_a_pair(name: str, params) -> None:
    b = backend(name)
    _, x, y = step_args(b)
    with pytest.raises((ShapeError, DTypeError)) as excinfo:
        b.train_step(params, x, y, 1e-3)
    message(excinfo, "train_step", "params", "(w1, w2)")


@pytest.mark.parametrize("count", (1, 3))
@pytest.mark.parametrize("name", BACKENDS)
def test_train_step_params_of_another_length(name: str, count: int) -> None:
    """Three weights (or one) are refused before any is updated."""
    b = backend(name)
    (w1, w2), x, y = step_args(b)
    params = (w1, w2, w2)[:count]
    before = snapshot(b, params)
    with pytest.raises(ShapeError) as excinfo:
        b.train_step(params, x, y, 1e-3)
    message(excinfo, "train_step", "(w1, w2)", str(count))
    assert_unchanged(b, params, before, "train_step")


@pytest.mark.parametrize("name", BACKENDS)
def test_train_step_params_as_one_array(name: str) -> None:
    b = backend(name)
    (w1, _), x, y = step_args(b)
    with pytest.raises(DTypeError) as excinfo:
        b.train_step(w1, x, y, 1e-3)
    message(excinfo, "train_step", "params", "(w1, w2)")


# ---- arrays that cannot be written -------------------------------------------------------------------


def read_only_forms(b: kernels.Backend, a: np.ndarray) -> dict[str, object]:
    """``a`` on ``b`` in every form that cannot be written in place, by the reason the message gives."""
    if b.raw.FAMILY == "numpy":
        frozen = b.asarray(a)
        frozen.flags.writeable = False
        return {"read-only": frozen, "writable copy": np.broadcast_to(b.asarray(a[:1]), a.shape)}
    with torch.inference_mode():
        inference = b.asarray(a)
    return {"inference tensor": inference, "expand": b.asarray(a[:1]).expand(*a.shape)}


@pytest.mark.parametrize("stage", OUT_STAGES)
@pytest.mark.parametrize("name", BACKENDS)
def test_read_only_out(name: str, stage: str) -> None:
    """An out= buffer that cannot be written: ReadOnlyError naming the stage, out= and why; nothing written."""
    b = backend(name)
    args = stage_args(b, stage)
    shape = b.raw.describe(getattr(b, stage)(*args))[0]
    for why, out in read_only_forms(b, np.full(shape, 7.0, dtype=b.dtype)).items():
        with pytest.raises(ReadOnlyError) as excinfo:
            call(b, stage, args, out=out)
        message(excinfo, stage, "out=", why)
        assert (b.to_numpy(out) == 7.0).all()


@pytest.mark.parametrize("name", BACKENDS)
def test_read_only_weight(name: str) -> None:
    """sgd_update and train_step refuse a weight they cannot update in place, before touching anything."""
    b = backend(name)
    v = values(b.dtype)
    for why, w in read_only_forms(b, v["w1"]).items():
        grad = b.asarray(v["grad_w1"])
        with pytest.raises(ReadOnlyError) as excinfo:
            b.sgd_update(w, grad, 1e-3)
        message(excinfo, "sgd_update", "w ", why)
    for which in ("w1", "w2"):
        for why, w in read_only_forms(b, v[which]).items():
            params, x, y = step_args(b)
            params = (w, params[1]) if which == "w1" else (params[0], w)
            before = snapshot(b, params)
            with pytest.raises(ReadOnlyError) as excinfo:
                b.train_step(params, x, y, 1e-3)
            message(excinfo, "train_step", which, why)
            assert_unchanged(b, params, before, "train_step")


@pytest.mark.parametrize("name", [n for n in BACKENDS if n.startswith("torch")])
def test_tensor_requiring_grad(name: str) -> None:
    """The stages compute gradients by hand: a tensor that requires grad is refused (torch would raise for out= and
    in-place updates), and accepted under torch.no_grad()."""
    b = backend(name)
    args = stage_args(b, "hidden")
    args[1].requires_grad_(True)
    with pytest.raises(DTypeError) as excinfo:
        b.hidden(*args, out=b.asarray(np.zeros((2, 4))))
    message(excinfo, "hidden", "w1", "require grad", "detach")
    w, grad = stage_args(b, "sgd_update")
    w.requires_grad_(True)
    with pytest.raises(DTypeError):
        b.sgd_update(w, grad, 1e-3)
    with torch.no_grad():
        b.sgd_update(w, grad, 1e-3)


# ---- sizes that do not fit ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKENDS)
def test_a_size_beyond_free_memory_is_refused(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    b = kernels.backend(name)
    problem = kernels.parse_problem("1000,1000,1000,1000")
    needed = kernels.memory_needed(problem, check=False, on_host=b.device_name == "cpu")
    monkeypatch.setattr(b.raw, "free_memory", lambda device: needed - 1)
    with pytest.raises(TooLargeError) as excinfo:
        b.check_fits(problem)
    message(excinfo, "1000x1000x1000x1000", b.device_name, "free")
    monkeypatch.setattr(b.raw, "free_memory", lambda device: needed)
    b.check_fits(problem)
    monkeypatch.setattr(b.raw, "free_memory", lambda device: None)  # unknown: not refused
    b.check_fits(problem)
