"""The stages in torch, for any torch device (cpu, cuda[:i], mps). Unchecked, as in numpy_.

No stage synchronises with the host: ``loss`` returns a 0-d tensor (no ``.item()``), the
update is one fused in-place ``add_``, the loss one fused ``mse_loss`` kernel. Given ``out=``
(and, for loss, ``scratch=``), a stage allocates no tensor at all. ATen operators are bound
once, below, where the public wrapper adds per-call Python work (docs/results/cpu-run.md).
"""

from __future__ import annotations

import numpy as np

from .errors import DeviceUnavailableError, DTypeError
from .memory import host_free

FAMILY = "torch"
# Stages whose out= form needs no scratch= here (the workspace holds none for them).
SCRATCH_DTYPES = {"relu_backward": None, "sgd_update": None}

try:
    import torch
except ImportError:  # pragma: no cover - exercised only where torch is absent
    torch = None
else:
    _mse_loss = torch._C._nn.mse_loss
    _NONE, _SUM = torch.nn._reduction.get_enum("none"), torch.nn._reduction.get_enum("sum")
    # The overloads' own functions: an overload packet (torch.ops.aten.threshold_backward) resolves
    # an overload per call, and OpOverload.__call__ adds a Python frame.
    _mse_loss_backward = torch.ops.aten.mse_loss_backward.default._op
    _mse_loss_backward_out = torch.ops.aten.mse_loss_backward.grad_input._op
    _threshold_backward = torch.ops.aten.threshold_backward.default._op
    _threshold_backward_out = torch.ops.aten.threshold_backward.grad_input._op


def _require_torch(name: str) -> None:
    if torch is None:
        raise DeviceUnavailableError(f"{name}: torch is not installed (pip install torch)")


def open_device(name: str):
    """The torch.device a backend name such as ``torch-cuda:1`` stands for, if it is present."""
    _require_torch(name)
    kind, _, index = name.removeprefix("torch-").partition(":")
    if index and not index.isdigit():
        raise DeviceUnavailableError(f"{name}: device index must be a non-negative integer, got {index!r}")
    if kind == "cpu":
        if index:
            raise DeviceUnavailableError(f"{name}: the CPU has no device index; use torch-cpu")
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise DeviceUnavailableError(f"{name}: CUDA is not available ({why}; torch {torch.__version__})")
        i = int(index or 0)
        count = torch.cuda.device_count()
        if i >= count:
            raise DeviceUnavailableError(f"{name}: no CUDA device {i}; this machine has {count} (indices 0..{count - 1})")
        return torch.device("cuda", i)
    if kind == "mps":
        if index:
            raise DeviceUnavailableError(f"{name}: MPS has no device index; use torch-mps")
        if not torch.backends.mps.is_available():
            raise DeviceUnavailableError(f"{name}: MPS is not available (torch.backends.mps.is_available() is False)")
        return torch.device("mps")
    raise DeviceUnavailableError(f"{name}: unknown torch device kind {kind!r}; valid: cpu, cuda[:i], mps")


def devices() -> list[str]:
    """Backend names that can run here: torch-cpu, torch-cuda (:i for every further GPU), torch-mps."""
    if torch is None:
        return []
    names = ["torch-cpu"]
    if torch.cuda.is_available():
        names += ["torch-cuda"] + [f"torch-cuda:{i}" for i in range(1, torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("torch-mps")
    return names


def asarray(a: np.ndarray, device, dtype: str):
    # np.asarray(order="C"), not np.ascontiguousarray: that makes a 0-d array 1-d.
    return torch.tensor(np.asarray(a, order="C"), dtype=getattr(torch, dtype), device=device)


def to_numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy()


def copy(dst, src) -> None:
    """dst[...] = src, in place, on the device (no host round trip)."""
    dst.copy_(src)


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def describe(a) -> tuple[tuple[int, ...], str, str]:
    if torch is None or not isinstance(a, torch.Tensor):
        raise DTypeError(f"expected a torch.Tensor, got {type(a).__module__}.{type(a).__qualname__}")
    if a.requires_grad and torch.is_grad_enabled():
        # out= and in-place writes refuse autograd tensors; the stages compute gradients by hand.
        raise DTypeError("expected a tensor that does not require grad (the stages compute gradients by hand); "
                         "pass a.detach() or call under torch.no_grad()")
    return tuple(a.shape), str(a.dtype).removeprefix("torch."), str(a.device)


def unwritable(a) -> str | None:
    if a.is_inference() and not torch.is_inference_mode_enabled():
        return "it is an inference tensor, which cannot be written outside torch.inference_mode(); pass a.clone()"
    if any(stride == 0 and size > 1 for stride, size in zip(a.stride(), a.shape)):
        return "several of its elements share one memory location (an expand()ed view); pass a.clone()"
    return None


def free_memory(device) -> int | None:
    """Bytes free on the host (cpu) or the CUDA device; None for MPS, whose share of memory is not known."""
    if device.type == "cpu":
        return host_free()
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return None


def hidden(x, w1, out=None):
    return torch.mm(x, w1, out=out)


def relu(h, out=None):
    # The method, not torch.relu: less overhead per call (docs/results/cpu-run.md).
    return h.relu() if out is None else torch.clamp_min(h, 0, out=out)


def output(h_relu, w2, out=None):
    return torch.mm(h_relu, w2, out=out)


def loss(y_pred, y, out=None, scratch=None):
    if out is None:
        # F.mse_loss(reduction="sum")'s own kernel, without its Python wrapper (broadcast, enum lookup).
        return _mse_loss(y_pred, y, _SUM)
    # No fused reduction writes to out= without a temporary of y's size: the squared difference
    # goes to scratch= (mse_loss unreduced: one kernel, where sub and square_ take two), then
    # torch's cascade sum (a float32 BLAS dot was 6e-5 off at 4M elements, too near the 1e-4 check).
    if y.is_cpu and y.numel() >= BLOCKED_FROM:
        return _blocked_loss(y_pred.reshape(-1), y.reshape(-1), out, scratch)
    return torch.sum(_mse_loss(y_pred, y, _NONE, out=scratch), dim=(0, 1), out=out)


# On the CPU, the out= loss of at least BLOCKED_FROM elements runs in blocks of BLOCK: each block's
# squares stay in cache instead of going to memory and coming back (2 of the copy's bytes per
# element, not 4).
BLOCK, BLOCKED_FROM = 1 << 17, 1 << 20


def _blocked_loss(a, b, out, scratch):
    n = a.numel()
    s = torch.empty_like(a) if scratch is None else scratch.reshape(-1)
    blocks = -(-n // BLOCK)
    partial = s[n - blocks:]  # each block's sum, at the end: past any block's squares (n >= BLOCKED_FROM = 8 BLOCK)
    for k, i in enumerate(range(0, n, BLOCK)):
        squares = _mse_loss(a[i:i + BLOCK], b[i:i + BLOCK], _NONE, out=s[:min(BLOCK, n - i)])
        torch.sum(squares, dim=0, out=partial[k])
    return torch.sum(partial, dim=0, out=out)


_ONES: dict = {}  # dtype (on the CPU) or (dtype, device) -> a 0-d 1: the upstream gradient of the loss


def grad_y_pred(y_pred, y, out=None):
    # ATen's gradient of the summed squared error, 2 * (y_pred - y) * 1: one kernel, exactly
    # torch.sub(y_pred, y).mul_(2) (scaling by 2 and by 1 rounds nothing), which takes two and
    # allocates a 0-d tensor for the Python 2 on every call.
    key = y.dtype if y.is_cpu else (y.dtype, y.device)  # hashing a torch.device is not free on the CPU
    one = _ONES.get(key)
    if one is None:  # not "or": the truth of a CUDA tensor waits for the device
        one = _ONES[key] = torch.ones((), dtype=y.dtype, device=y.device)
    if out is None:
        return _mse_loss_backward(one, y_pred, y, _SUM)
    return _mse_loss_backward_out(one, y_pred, y, _SUM, grad_input=out)


def grad_w2(h_relu, grad_y_pred, out=None):
    return torch.mm(h_relu.t(), grad_y_pred, out=out)


def grad_h_relu(grad_y_pred, w2, out=None):
    return torch.mm(grad_y_pred, w2.t(), out=out)


# Per dtype, the largest float below -0.0: "h > it" is exactly "h >= 0" (h == -0.0 included).
_BELOW_ZERO = {torch.float32: -(2.0 ** -149), torch.float64: -(2.0 ** -1074)} if torch is not None else {}


def relu_backward(grad_h_relu, h, out=None, scratch=None):
    # ATen's fused, branch-free ReLU backward (one kernel, where masked_fill and torch.where
    # branch per element and are many times slower: docs/results/cpu-run.md). It keeps
    # the gradient where h > threshold; a threshold just below -0.0 keeps it at h == 0, as the
    # tutorial does. A NaN in h zeroes the gradient there. Needs no scratch.
    if out is None:
        return _threshold_backward(grad_h_relu, h, _BELOW_ZERO[h.dtype])
    return _threshold_backward_out(grad_h_relu, h, _BELOW_ZERO[h.dtype], grad_input=out)


def grad_w1(x, grad_h, out=None):
    return torch.mm(x.t(), grad_h, out=out)


def sgd_update(w, grad, lr, scratch=None):
    w.add_(grad, alpha=-lr)  # in place, no temporary: scratch is not needed


def capture_unavailable(device) -> str:
    """Why ``capture`` cannot run on ``device`` ('' where it can)."""
    return "" if device.type == "cuda" else f"CUDA graphs need a CUDA device, and this backend runs on {device}"


def capture(device, fn):
    """``fn``'s device work recorded once as a CUDA graph; returns the graph's replay (no arguments).

    ``fn`` must allocate nothing and keep its tensors' addresses (a workspace step). It runs three
    times on a side stream first, as capture requires (cuBLAS handles, lazy kernel loading): restore
    whatever it mutates afterwards. The replay runs on the current stream and does not synchronise.
    """
    why = capture_unavailable(device)
    if why:
        raise DeviceUnavailableError(why)
    with torch.cuda.device(device):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    return graph.replay
