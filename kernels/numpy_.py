"""The stages in numpy. Unchecked: the ``Backend`` wrapper validates, these are what gets timed.

Each is the fastest idiomatic numpy form: BLAS matmuls on transposed views (no copies),
ufuncs with ``out=`` where a buffer can be reused, one temporary at most.
"""

from __future__ import annotations

import numpy as np

from .errors import DTypeError
from .memory import host_free

FAMILY = "numpy"


def open_device(name: str) -> str:
    """numpy runs on the host, always."""
    return "cpu"


def devices() -> list[str]:
    return ["numpy"]


def asarray(a: np.ndarray, device: str, dtype: str) -> np.ndarray:
    # A contiguous copy that the caller's array does not alias.
    return np.array(a, dtype=dtype, order="C", copy=True)


def to_numpy(a) -> np.ndarray:
    return np.asarray(a)


def copy(dst: np.ndarray, src: np.ndarray) -> None:
    """dst[...] = src, in place (restores state between benchmark rounds; the copy roofline)."""
    np.copyto(dst, src)


def synchronize(device: str) -> None:
    """numpy is synchronous: nothing is queued."""


def describe(a) -> tuple[tuple[int, ...], str, str]:
    if not isinstance(a, np.ndarray):
        raise DTypeError(f"expected a numpy.ndarray, got {type(a).__module__}.{type(a).__qualname__}")
    return a.shape, a.dtype.name, "cpu"


def unwritable(a: np.ndarray) -> str | None:
    if not a.flags.writeable:
        return "it is read-only (writeable=False: a broadcast view or a frozen array); pass a writable copy, np.array(a)"
    return None


def free_memory(device: str) -> int | None:
    return host_free()


def hidden(x, w1, out=None):
    return np.matmul(x, w1, out=out)


def relu(h, out=None):
    return np.maximum(h, 0, out=out)


def output(h_relu, w2, out=None):
    return np.matmul(h_relu, w2, out=out)


def loss(y_pred, y):
    d = np.subtract(y_pred, y).ravel()
    # BLAS dot of the difference with itself: one temporary, no squared copy; a 0-d value.
    return np.dot(d, d)


def grad_y_pred(y_pred, y, out=None):
    out = np.subtract(y_pred, y, out=out)
    out *= 2
    return out


def grad_w2(h_relu, grad_y_pred, out=None):
    return np.matmul(h_relu.T, grad_y_pred, out=out)


def grad_h_relu(grad_y_pred, w2, out=None):
    return np.matmul(grad_y_pred, w2.T, out=out)


def relu_backward(grad_h_relu, h, out=None):
    # A multiply by the mask "not h < 0", not a select: np.where and boolean-index assignment
    # branch per element and mispredict on a random sign pattern (3.9 ms against 0.39 ms for
    # 1024x1024 here). Exact for finite gradients, h == 0 and h == -0.0 keep theirs; a
    # non-finite gradient where h < 0 gives NaN (inf * 0), not 0.
    keep = np.less(h, 0)
    np.logical_not(keep, out=keep)
    return np.multiply(grad_h_relu, keep, out=out)


def grad_w1(x, grad_h, out=None):
    return np.matmul(x.T, grad_h, out=out)


def sgd_update(w, grad, lr):
    w -= lr * grad
