"""``Backend``: one backend module bound to a device and a dtype, with checked stages and steps.

Attributes named after the stages are the checked forms (a one-line error before any work);
``backend.raw`` is the module itself, the unchecked stages the perf layer times and the steps
compose. Three forms of the step, each composed from the same stage functions:

- ``train_step``: the allocating step, as the tutorial's code runs (a fresh array per intermediate);
- ``workspace_step``: every stage in its ``out=`` form, writing into a ``Workspace`` allocated
  once per problem: nothing is allocated per step;
- ``graph_step``: the workspace step captured once as a device graph and replayed (CUDA only).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields
from types import ModuleType

import numpy as np

from .contract import (
    SIGNATURES,
    STEP_ARGS,
    check_arrays,
    check_out,
    check_params,
    check_stage,
    check_writable,
    scratch_axes,
)
from .errors import DeviceUnavailableError, ProblemError, TooLargeError, UnknownNameError
from .problem import DEFAULT_DTYPE, DTYPES, STAGES, Problem, check_lr, memory_needed


def train_step(stages, params, x, y, lr: float):
    """One step of the tutorial, composed from ``stages`` (a backend module); returns the loss.

    Updates ``params`` = (w1, w2) in place. The loss stays on the device (no host sync).
    """
    w1, w2 = params
    h = stages.hidden(x, w1)
    h_relu = stages.relu(h)
    y_pred = stages.output(h_relu, w2)
    loss = stages.loss(y_pred, y)
    grad_y_pred = stages.grad_y_pred(y_pred, y)
    grad_w2 = stages.grad_w2(h_relu, grad_y_pred)
    grad_h_relu = stages.grad_h_relu(grad_y_pred, w2)
    grad_h = stages.relu_backward(grad_h_relu, h)
    grad_w1 = stages.grad_w1(x, grad_h)
    stages.sgd_update(w1, grad_w1, lr)
    stages.sgd_update(w2, grad_w2, lr)
    return loss


# Stage -> the intermediate it writes, named as reference.forward_backward names them.
OUTPUTS = {
    "hidden": "h", "relu": "h_relu", "output": "y_pred", "loss": "loss", "grad_y_pred": "grad_y_pred",
    "grad_w2": "grad_w2", "grad_h_relu": "grad_h_relu", "relu_backward": "grad_h", "grad_w1": "grad_w1",
}


@dataclass(eq=False, slots=True)
class Workspace:
    """Every intermediate of one step and the scratch its stages take, allocated once for one problem
    shape on one backend (``Backend.workspace``). ``loss`` is a 0-d array, overwritten every step; a
    scratch the backend's stages do not use is None."""

    shape: tuple[int, int, int, int]   # N, D_in, H, D_out
    h: object
    h_relu: object
    y_pred: object
    loss: object
    grad_y_pred: object
    grad_w2: object
    grad_h_relu: object
    grad_h: object
    grad_w1: object
    loss_scratch: object      # shaped like y_pred
    grad_h_scratch: object    # shaped like grad_h_relu (relu_backward's; its dtype is the module's choice)
    w1_scratch: object        # shaped like w1 (its sgd_update's)
    w2_scratch: object

    def arrays(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "shape"}


# Stage -> its Workspace scratch arrays, one per call in a step (sgd_update: w1's, then w2's).
SCRATCHES = {"loss": ("loss_scratch",), "relu_backward": ("grad_h_scratch",), "sgd_update": ("w1_scratch", "w2_scratch")}
_WEIGHT_AXES = {name: tuple(axes) for name, *axes in STEP_ARGS}


def workspace_axes() -> dict[str, tuple[str, ...]]:
    """Every Workspace array -> its dims (N, D_in, H, D_out names)."""
    axes = {name: SIGNATURES[stage][1] for stage, name in OUTPUTS.items()}
    axes |= {"loss_scratch": scratch_axes("loss"), "grad_h_scratch": scratch_axes("relu_backward"),
             "w1_scratch": _WEIGHT_AXES["w1"], "w2_scratch": _WEIGHT_AXES["w2"]}
    return axes


def workspace_step(stages, ws: Workspace, params, x, y, lr: float):
    """One step of the tutorial with every stage in its ``out=`` form, writing into ``ws``.

    Updates ``params`` = (w1, w2) in place; returns ``ws.loss`` (on the device, overwritten by the
    next step). Allocates no array: each intermediate, the loss included, has its buffer in ``ws``.
    """
    w1, w2 = params
    stages.hidden(x, w1, out=ws.h)
    stages.relu(ws.h, out=ws.h_relu)
    stages.output(ws.h_relu, w2, out=ws.y_pred)
    stages.loss(ws.y_pred, y, out=ws.loss, scratch=ws.loss_scratch)
    stages.grad_y_pred(ws.y_pred, y, out=ws.grad_y_pred)
    stages.grad_w2(ws.h_relu, ws.grad_y_pred, out=ws.grad_w2)
    stages.grad_h_relu(ws.grad_y_pred, w2, out=ws.grad_h_relu)
    stages.relu_backward(ws.grad_h_relu, ws.h, out=ws.grad_h, scratch=ws.grad_h_scratch)
    stages.grad_w1(x, ws.grad_h, out=ws.grad_w1)
    stages.sgd_update(w1, ws.grad_w1, lr, scratch=ws.w1_scratch)
    stages.sgd_update(w2, ws.grad_w2, lr, scratch=ws.w2_scratch)
    return ws.loss


class Backend:
    """The ten stages and ``train_step`` of one backend on one device, in one dtype."""

    def __init__(self, name: str, module: ModuleType, dtype: str = DEFAULT_DTYPE) -> None:
        if dtype not in DTYPES:
            raise UnknownNameError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        self.name = name
        self.raw = module
        self.dtype = dtype
        self.device = module.open_device(name)
        self.device_name = str(self.device)
        for stage in STAGES:
            setattr(self, stage, self._checked(stage))

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, dtype={self.dtype!r}, device={self.device_name!r})"

    def _checked(self, stage: str):
        fn = getattr(self.raw, stage)
        n_args = len(SIGNATURES[stage][0])

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            # After the arrays: lr for sgd_update and out= for the others, then scratch=.
            key = "lr" if stage == "sgd_update" else "out"
            positional = len(args) > n_args
            extra = args[n_args] if positional else kwargs.get(key)
            scratch = args[n_args + 1] if len(args) > n_args + 1 else kwargs.get("scratch")
            lr, out = (extra, None) if stage == "sgd_update" else (None, extra)
            lr = check_stage(stage, args[:n_args], out, self.raw.describe, self.raw.unwritable, self.dtype,
                             self.device_name, lr, scratch, self.scratch_dtype(stage) if stage in SCRATCHES else None)
            if lr is not None:  # the checked float, not 10**18 as a Python int or a numpy scalar
                if positional:
                    args = (*args[:n_args], lr, *args[n_args + 1:])
                else:
                    kwargs[key] = lr
            return fn(*args, **kwargs)

        return checked

    def asarray(self, a: np.ndarray):
        """``a`` copied to this backend's device and dtype."""
        return self.raw.asarray(np.asarray(a), self.device, self.dtype)

    def to_numpy(self, a) -> np.ndarray:
        return self.raw.to_numpy(a)

    def synchronize(self) -> None:
        """Wait until all work queued on this backend's device has finished."""
        self.raw.synchronize(self.device)

    def free_memory(self) -> int | None:
        """Bytes free on this backend's device now, or None where that cannot be known."""
        return self.raw.free_memory(self.device)

    def check_fits(self, problem: Problem, check: bool = False) -> None:
        """Raise TooLargeError, before anything is allocated, if ``problem`` needs more memory than is free.

        ``check``: count the float64 reference check too, as the perf suite runs it.
        """
        free = self.free_memory()
        needed = memory_needed(problem, check=check, on_host=self.device_name == "cpu")
        if free is not None and needed > free:
            raise TooLargeError(f"size {problem.name} needs about {_size(needed)} on {self.device_name}, "
                                f"{_size(free)} free; choose a smaller size")

    def check_step(self, params, x, y, lr: float) -> float:
        """What ``train_step`` checks, without the step: returns the learning rate as a float."""
        w1, w2 = check_params("train_step", params)
        check_arrays("train_step", STEP_ARGS, (w1, w2, x, y), self.raw.describe, self.dtype, self.device_name)
        for name, w in (("w1", w1), ("w2", w2)):
            check_writable("train_step", name, w, self.raw.unwritable)
        return check_lr(lr)

    def train_step(self, params, x, y, lr: float):
        """One training step on (w1, w2) in place; returns the loss as a backend scalar."""
        lr = self.check_step(params, x, y, lr)
        return train_step(self.raw, params, x, y, lr)

    def empty(self, shape: tuple[int, ...], dtype: str | None = None):
        """A zero-filled array of ``shape`` on this backend's device, in its dtype or ``dtype`` (memory touched once, here)."""
        dtype = dtype or self.dtype
        return self.raw.asarray(np.zeros(shape, dtype=dtype), self.device, dtype)

    def scratch_dtype(self, stage: str) -> str | None:
        """The dtype of ``stage``'s scratch= array: the backend's, unless its module's SCRATCH_DTYPES names
        another, or None where the module needs no scratch for it."""
        dtypes = getattr(self.raw, "SCRATCH_DTYPES", {})
        return dtypes[stage] if stage in dtypes else self.dtype

    def workspace(self, shape: tuple[int, int, int, int]) -> Workspace:
        """Every intermediate of a step for a problem of ``shape`` = (N, D_in, H, D_out), zero-filled."""
        dims = _dims(shape)
        dtypes = self._workspace_dtypes()
        arrays = {name: None if dtypes[name] is None else self.empty(tuple(dims[a] for a in axes), dtypes[name])
                  for name, axes in workspace_axes().items()}
        return Workspace(tuple(dims[a] for a in ("N", "D_in", "H", "D_out")), **arrays)

    def workspace_step(self, ws: Workspace, params, x, y, lr: float):
        """One step with every intermediate in ``ws``; updates (w1, w2) in place; returns ``ws.loss``."""
        lr = self._check_workspace_step("workspace_step", ws, params, x, y, lr)
        return workspace_step(self.raw, ws, params, x, y, lr)

    def graph_step(self, ws: Workspace, params, x, y, lr: float) -> Callable[[], object]:
        """The workspace step on these very arrays, captured once as a device graph: returns a function
        that replays it (one step: updates w1, w2 in place, returns ``ws.loss``).

        DeviceUnavailableError where this backend cannot capture (every device but CUDA). Capturing
        runs the step a few times first: restore the weights before relying on them.
        """
        why = self.graph_unavailable()
        if why:
            raise DeviceUnavailableError(why)
        lr = self._check_workspace_step("graph_step", ws, params, x, y, lr)
        replay = self.raw.capture(self.device, functools.partial(workspace_step, self.raw, ws, params, x, y, lr))

        def step():
            replay()
            return ws.loss

        return step

    def _workspace_dtypes(self) -> dict[str, str | None]:
        """Every Workspace array -> its dtype (None: a scratch this backend's stages do not use)."""
        dtypes: dict[str, str | None] = {name: self.dtype for name in workspace_axes()}
        return dtypes | {name: self.scratch_dtype(stage) for stage, names in SCRATCHES.items() for name in names}

    def graph_unavailable(self) -> str:
        """Why ``graph_step`` cannot run here ('' where it can): a module with ``capture``, on a device it captures on."""
        if not callable(getattr(self.raw, "capture", None)):
            return f"{self.name}: graph capture needs CUDA (torch-cuda); the {self.raw.FAMILY} backend has none"
        why = self.raw.capture_unavailable(self.device)
        return f"{self.name}: {why}" if why else ""

    def _check_workspace_step(self, where: str, ws: Workspace, params, x, y, lr: float) -> float:
        w1, w2 = check_params(where, params)
        dims = check_arrays(where, STEP_ARGS, (w1, w2, x, y), self.raw.describe, self.dtype, self.device_name)
        for name, w in (("w1", w1), ("w2", w2)):
            check_writable(where, name, w, self.raw.unwritable)
        if not isinstance(ws, Workspace):
            raise ProblemError(f"{where}: ws must be a Workspace (backend.workspace(shape)), got {type(ws).__name__}")
        arrays = ws.arrays()
        dtypes = self._workspace_dtypes()
        for name, axes in workspace_axes().items():
            if dtypes[name] is None and arrays[name] is None:  # a scratch this backend does not use
                continue
            check_out(where, arrays[name], dims, axes, self.raw.describe, dtypes[name] or self.dtype, self.device_name,
                      label=f"workspace.{name}")
            check_writable(where, f"workspace.{name}", arrays[name], self.raw.unwritable)
        return check_lr(lr)


def _dims(shape) -> dict[str, int]:
    """{"N": .., "D_in": .., "H": .., "D_out": ..} from (N, D_in, H, D_out), or a ProblemError."""
    try:
        N, D_in, H, D_out = shape
    except (TypeError, ValueError):
        raise ProblemError(f"a problem shape is (N, D_in, H, D_out), got {shape!r}") from None
    dims = {"N": N, "D_in": D_in, "H": H, "D_out": D_out}
    for dim, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ProblemError(f"{dim} must be a positive integer, got {value!r}")
    return {k: int(v) for k, v in dims.items()}


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.4g} {unit}"
        n /= 1024
    return f"{n:.4g} PiB"
