"""Stage inputs drawn from a problem, the reference's answer for them, and the comparison.

Every stage is checked on the exact values it received: the inputs are cast to the
problem's dtype first, and the reference recomputes from those, in float64.
"""

from __future__ import annotations

import numpy as np

from . import reference
from .contract import SIGNATURES
from .problem import Problem

# Largest error allowed, relative to the largest magnitude in the reference result.
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}


def intermediates(problem: Problem) -> dict[str, np.ndarray]:
    """x, y, w1, w2 and every intermediate of one step, in the problem's dtype."""
    values = reference.forward_backward(**problem.inputs())
    return {k: np.asarray(v, dtype=problem.dtype) for k, v in values.items() if k != "loss"}


def calls(stage: str, values: dict[str, np.ndarray]) -> list[tuple[np.ndarray, ...]]:
    """The argument tuples one benchmark of ``stage`` passes (sgd_update: w1 then w2)."""
    if stage == "sgd_update":
        return [(values["w1"], values["grad_w1"]), (values["w2"], values["grad_w2"])]
    return [tuple(values[name] for name, *_ in SIGNATURES[stage][0])]


def expected(stage: str, args: tuple[np.ndarray, ...], lr: float | None = None) -> np.ndarray:
    """The float64 reference result of ``stage`` on ``args`` (the updated weight for sgd_update)."""
    f64 = [reference.f64(a) for a in args]
    if stage == "sgd_update":
        return reference.sgd_update(*f64, lr)
    return np.asarray(getattr(reference, stage)(*f64))


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape))


def mismatch(actual, reference_value, dtype: str) -> str | None:
    """None if ``actual`` matches within the dtype's tolerance, else why not (one line).

    NaN or infinity where the reference is finite never passes.
    """
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(reference_value, dtype=np.float64)
    if a.shape != r.shape:
        return f"shape {a.shape}, expected {r.shape}"
    if a.size == 0:
        return None
    bad = ~np.isfinite(a) & np.isfinite(r)
    if bad.any():
        index = _index(int(np.argmax(bad)), a.shape)
        return f"non-finite value {float(a[index])} at index {index} where the reference is {float(r[index]):.9g}"
    scale = float(np.max(np.abs(r))) or 1.0
    err = np.abs(a - r)
    worst = int(np.argmax(err))
    index = _index(worst, a.shape)
    limit = TOLERANCE[dtype] * scale
    if not err.flat[worst] <= limit:
        return (
            f"error {err.flat[worst]:.3g} at index {index} (got {float(a[index]):.9g}, reference {float(r[index]):.9g}) "
            f"exceeds {limit:.3g} = {TOLERANCE[dtype]:g} ({dtype}) x max |reference| {scale:.3g}"
        )
    return None
