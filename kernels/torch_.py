"""The stages in torch, for any torch device (cpu, cuda[:i], mps). Unchecked, as in numpy_.

No stage synchronises with the host: ``loss`` returns a 0-d tensor (no ``.item()``), the
update is one fused in-place ``add_``, the loss one fused ``mse_loss`` kernel.
"""

from __future__ import annotations

import numpy as np

from .errors import DeviceUnavailableError, DTypeError
from .memory import host_free

FAMILY = "torch"

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - exercised only where torch is absent
    torch = None


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
    return torch.tensor(np.ascontiguousarray(a), dtype=getattr(torch, dtype), device=device)


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
    return torch.relu(h) if out is None else torch.clamp_min(h, 0, out=out)


def output(h_relu, w2, out=None):
    return torch.mm(h_relu, w2, out=out)


def loss(y_pred, y):
    return F.mse_loss(y_pred, y, reduction="sum")


def grad_y_pred(y_pred, y, out=None):
    return torch.sub(y_pred, y, out=out).mul_(2)


def grad_w2(h_relu, grad_y_pred, out=None):
    return torch.mm(h_relu.t(), grad_y_pred, out=out)


def grad_h_relu(grad_y_pred, w2, out=None):
    return torch.mm(grad_y_pred, w2.t(), out=out)


# Per dtype, the largest float below -0.0: "h > it" is exactly "h >= 0" (h == -0.0 included).
_BELOW_ZERO = {torch.float32: -(2.0 ** -149), torch.float64: -(2.0 ** -1074)} if torch is not None else {}


def relu_backward(grad_h_relu, h, out=None):
    # ATen's fused, branch-free ReLU backward (one kernel: 0.18 ms for 1024x1024 here, where
    # masked_fill and torch.where, which branch per element, took 4.6 and 4.2 ms). It keeps
    # the gradient where h > threshold; a threshold just below -0.0 keeps it at h == 0, as the
    # tutorial does. A NaN in h zeroes the gradient there.
    result = torch.ops.aten.threshold_backward(grad_h_relu, h, _BELOW_ZERO[h.dtype])
    return result if out is None else out.copy_(result)


def grad_w1(x, grad_h, out=None):
    return torch.mm(x.t(), grad_h, out=out)


def sgd_update(w, grad, lr):
    w.add_(grad, alpha=-lr)
