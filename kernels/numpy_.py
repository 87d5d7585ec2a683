"""The stages in numpy. Unchecked: the ``Backend`` wrapper validates, these are what gets timed.

Each is the fastest idiomatic numpy form: BLAS matmuls on transposed views (no copies),
ufuncs with ``out=`` where a buffer can be reused, one temporary at most. Given ``out=`` (and,
for loss, relu_backward and sgd_update, ``scratch=``), a stage allocates no array at all.
"""

from __future__ import annotations

import numpy as np

from .errors import DTypeError
from .memory import host_free

FAMILY = "numpy"
# scratch= arrays not in the backend's dtype: relu_backward's holds its mask.
SCRATCH_DTYPES = {"relu_backward": "bool"}


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


# The out= loss of at least BLOCKED_FROM elements runs in blocks of BLOCK: each block's difference
# stays in cache instead of going to memory and coming back (2 of the copy's bytes per element, not 4).
BLOCK, BLOCKED_FROM = 1 << 17, 1 << 20


def loss(y_pred, y, out=None, scratch=None):
    # BLAS dot of the difference with itself: one temporary (scratch=), no squared copy; a 0-d value.
    if out is not None and y.size >= BLOCKED_FROM:
        return _blocked_loss(y_pred.reshape(-1), y.reshape(-1), out, scratch)
    d = np.subtract(y_pred, y, out=scratch).ravel()
    if out is None:
        return np.dot(d, d)
    np.dot(d, d, out=out)  # returns a fresh scalar; the buffer holds the value
    return out


def _blocked_loss(a, b, out, scratch):
    s = np.empty(BLOCK, a.dtype) if scratch is None else scratch.reshape(-1)
    total = 0.0  # the blocks' dots, summed in float64
    for i in range(0, a.size, BLOCK):
        d = np.subtract(a[i:i + BLOCK], b[i:i + BLOCK], out=s[:min(BLOCK, a.size - i)])
        total += float(np.dot(d, d))
    out[()] = total
    return out


def grad_y_pred(y_pred, y, out=None):
    out = np.subtract(y_pred, y, out=out)
    out *= 2
    return out


def grad_w2(h_relu, grad_y_pred, out=None):
    return np.matmul(h_relu.T, grad_y_pred, out=out)


def grad_h_relu(grad_y_pred, w2, out=None):
    return np.matmul(grad_y_pred, w2.T, out=out)


def relu_backward(grad_h_relu, h, out=None, scratch=None):
    # A multiply by the mask "not h < 0", not a select: np.where and boolean-index assignment
    # branch per element and mispredict on a random sign pattern, ten times slower at compute
    # (docs/results/cpu-run.md). Exact for finite gradients, h == 0 and h == -0.0 keep theirs; a
    # non-finite gradient where h < 0 gives NaN (inf * 0), not 0. The mask goes to scratch= (bool)
    # where given; the multiply casts it in numpy's own fixed buffer (8192 elements), not per array.
    keep = np.less(h, 0, out=scratch)
    np.logical_not(keep, out=keep)
    return np.multiply(grad_h_relu, keep, out=out)


def grad_w1(x, grad_h, out=None):
    return np.matmul(x.T, grad_h, out=out)


def sgd_update(w, grad, lr, scratch=None):
    if scratch is None:
        w -= lr * grad
    else:  # the same two roundings, lr * grad into scratch= first
        np.multiply(grad, lr, out=scratch)
        w -= scratch
