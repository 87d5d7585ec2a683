"""The stage contract: argument names and their shapes in N, D_in, H, D_out, and its checks.

Backend modules implement the stages without checks (they are what gets timed); the
``Backend`` object wraps each in ``check`` so a caller's mistake is a one-line error raised
before any work is done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .errors import DTypeError, ReadOnlyError, ShapeError
from .problem import check_lr

# stage -> ((argument, dim, dim), ...), then the shape of the result ("R", "C": any 2-D shape).
SIGNATURES: dict[str, tuple[tuple[tuple[str, str, str], ...], tuple[str, ...]]] = {
    "hidden": ((("x", "N", "D_in"), ("w1", "D_in", "H")), ("N", "H")),
    "relu": ((("h", "N", "H"),), ("N", "H")),
    "output": ((("h_relu", "N", "H"), ("w2", "H", "D_out")), ("N", "D_out")),
    "loss": ((("y_pred", "N", "D_out"), ("y", "N", "D_out")), ()),
    "grad_y_pred": ((("y_pred", "N", "D_out"), ("y", "N", "D_out")), ("N", "D_out")),
    "grad_w2": ((("h_relu", "N", "H"), ("grad_y_pred", "N", "D_out")), ("H", "D_out")),
    "grad_h_relu": ((("grad_y_pred", "N", "D_out"), ("w2", "H", "D_out")), ("N", "H")),
    "relu_backward": ((("grad_h_relu", "N", "H"), ("h", "N", "H")), ("N", "H")),
    "grad_w1": ((("x", "N", "D_in"), ("grad_h", "N", "H")), ("D_in", "H")),
    "sgd_update": ((("w", "R", "C"), ("grad", "R", "C")), ()),
}
STEP_ARGS = (("w1", "D_in", "H"), ("w2", "H", "D_out"), ("x", "N", "D_in"), ("y", "N", "D_out"))
# Stages whose out= form may need a temporary: ``scratch=``, a preallocated array shaped like this
# argument that the stage may overwrite, in the backend's dtype unless its module's SCRATCH_DTYPES
# says otherwise or that it needs none (numpy needs all three, relu_backward's a bool mask; torch
# needs loss's only).
SCRATCH: dict[str, str] = {"loss": "y_pred", "relu_backward": "grad_h_relu", "sgd_update": "w"}

# describe(a) -> (shape, dtype name, device name); raises DTypeError for a foreign array type.
Describe = Callable[[object], tuple[tuple[int, ...], str, str]]
# unwritable(a) -> why ``a`` cannot be written in place, or None if it can.
Unwritable = Callable[[object], "str | None"]


def check_arrays(
    where: str, named: Sequence[tuple[str, str, str]], arrays: Sequence[object], describe: Describe,
    dtype: str, device: str,
) -> dict[str, int]:
    """Check 2-D shapes against the named dims, one dtype and one device; return the dims."""
    dims: dict[str, tuple[int, str]] = {}
    if len(arrays) != len(named):
        raise ShapeError(f"{where}: expected {len(named)} arrays ({', '.join(n for n, *_ in named)}), got {len(arrays)}")
    for (name, *axes), array in zip(named, arrays):
        try:
            shape, array_dtype, array_device = describe(array)
        except DTypeError as exc:
            raise DTypeError(f"{where}: {name}: {exc}") from None
        if array_dtype != dtype:
            raise DTypeError(f"{where}: {name} is {array_dtype}, but this backend computes in {dtype}; "
                             "convert with backend.asarray")
        if array_device != device:
            raise DTypeError(f"{where}: {name} is on {array_device}, but this backend runs on {device}; "
                             "convert with backend.asarray")
        if len(shape) != 2:
            raise ShapeError(f"{where}: {name} must be 2-D ({', '.join(axes)}), got shape {shape}")
        for axis, size in zip(axes, shape):
            if axis in dims and dims[axis][0] != size:
                bound, source = dims[axis]
                raise ShapeError(
                    f"{where}: {name} has shape {shape} but {source} fixes {axis}={bound} "
                    f"(expected {name} as ({', '.join(axes)}))"
                )
            dims.setdefault(axis, (size, f"{name} {shape}"))
    return {axis: size for axis, (size, _) in dims.items()}


def check_out(where: str, out: object, dims: dict[str, int], axes: tuple[str, ...], describe: Describe,
              dtype: str, device: str, label: str = "out=") -> None:
    """Check a preallocated buffer (``out=``, or what ``label`` names) against its shape, dtype and device."""
    expected = tuple(dims[a] for a in axes)
    try:
        shape, out_dtype, out_device = describe(out)
    except DTypeError as exc:
        raise DTypeError(f"{where}: {label}: {exc}") from None
    if out_dtype != dtype or out_device != device:
        raise DTypeError(f"{where}: {label} must be {dtype} on {device}, got {out_dtype} on {out_device}")
    if shape != expected:
        raise ShapeError(f"{where}: {label} must have shape {expected} ({', '.join(axes) or 'a 0-d value'}), got {shape}")


def check_writable(where: str, name: str, array: object, unwritable: Unwritable) -> None:
    """Check that an array the call writes (``out=``, a weight updated in place) can be written."""
    why = unwritable(array)
    if why:
        raise ReadOnlyError(f"{where}: {name} is written in place, but {why}")


def check_params(where: str, params: object) -> tuple[object, object]:
    """``params`` as the pair (w1, w2) a training step updates."""
    if not isinstance(params, (tuple, list)):
        kind = f"{type(params).__module__}.{type(params).__qualname__}"
        raise DTypeError(f"{where}: params must be a tuple (w1, w2), got {kind}")
    if len(params) != 2:
        raise ShapeError(f"{where}: params must be a tuple (w1, w2) of two arrays, got {len(params)}")
    return params[0], params[1]


def check_stage(stage: str, args: Sequence[object], out: object, describe: Describe, unwritable: Unwritable,
                dtype: str, device: str, lr: object = None, scratch: object = None,
                scratch_dtype: str | None = None) -> float | None:
    """Check one stage's arguments; returns the learning rate as a float for sgd_update."""
    named, result_axes = SIGNATURES[stage]
    dims = check_arrays(stage, named, args, describe, dtype, device)
    if out is not None:
        check_out(stage, out, dims, result_axes, describe, dtype, device)
        check_writable(stage, "out=", out, unwritable)
    if scratch is not None:
        if stage not in SCRATCH:
            raise ShapeError(f"{stage}: takes no scratch=; only {', '.join(SCRATCH)} do")
        check_out(stage, scratch, dims, scratch_axes(stage), describe, scratch_dtype or dtype, device, label="scratch=")
        check_writable(stage, "scratch=", scratch, unwritable)
    if stage == "sgd_update":
        check_writable(stage, named[0][0], args[0], unwritable)
        return check_lr(lr)
    return None


def scratch_axes(stage: str) -> tuple[str, ...]:
    """The dims of ``stage``'s scratch= array: those of the argument SCRATCH names."""
    return next(tuple(axes) for name, *axes in SIGNATURES[stage][0] if name == SCRATCH[stage])
