"""``Backend``: one backend module bound to a device and a dtype, with checked stages.

Attributes named after the stages are the checked forms (a one-line error before any work);
``backend.raw`` is the module itself, the unchecked stages the perf layer times and
``train_step`` composes.
"""

from __future__ import annotations

import functools
from types import ModuleType

import numpy as np

from .contract import SIGNATURES, STEP_ARGS, check_arrays, check_params, check_stage, check_writable
from .errors import TooLargeError, UnknownNameError
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
            # The argument after the arrays is lr for sgd_update and out= for the others.
            key = "lr" if stage == "sgd_update" else "out"
            positional = len(args) > n_args
            extra = args[n_args] if positional else kwargs.get(key)
            lr, out = (extra, None) if stage == "sgd_update" else (None, extra)
            lr = check_stage(stage, args[:n_args], out, self.raw.describe, self.raw.unwritable, self.dtype,
                             self.device_name, lr)
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


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.4g} {unit}"
        n /= 1024
    return f"{n:.4g} PiB"
