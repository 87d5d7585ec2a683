"""Every stage of the tutorial's manual training step, for every backend, behind one contract.

    >>> import kernels
    >>> b = kernels.backend("torch-cpu")           # float32 unless dtype= says otherwise
    >>> h = b.hidden(b.asarray(x), b.asarray(w1))

Three forms of the step, composed from the same stages: ``b.train_step`` (allocating, as the
tutorial's code does), ``b.workspace_step`` (every stage in its ``out=`` form, writing into
``b.workspace(shape)``: nothing allocated per step) and ``b.graph_step`` (that step captured
once as a CUDA graph, replayed).

Adding a backend: write one module exporting the ten stages, with the signatures numpy_.py's
have (``out=`` and, for the stages in ``contract.SCRATCH``, ``scratch=``), plus ``open_device``,
``devices``, ``asarray``, ``to_numpy``, ``copy``, ``synchronize``, ``describe``, ``unwritable``
and ``free_memory``, then add one line to ``_REGISTRY`` (and, optionally, the tutorial's literal
code for that library to ``tutorial.STEPS``; ``SCRATCH_DTYPES`` where a scratch= array is not in
the backend's dtype or not needed; ``capture``/``capture_unavailable`` where the device records graphs).
"""

from __future__ import annotations

import importlib

from .backend import Backend
from .errors import (
    DeviceUnavailableError,
    DTypeError,
    KernelError,
    ProblemError,
    ReadOnlyError,
    ShapeError,
    TooLargeError,
    UnknownNameError,
)
from .problem import DEFAULT_DTYPE, DTYPES, MATMUL_STAGES, PRESETS, STAGES, Problem, memory_needed, parse_problem

# Backend family (the name before any ":index") -> the module implementing it.
_REGISTRY: dict[str, str] = {
    "numpy": "kernels.numpy_",
    "torch-cpu": "kernels.torch_",
    "torch-cuda": "kernels.torch_",
    "torch-mps": "kernels.torch_",
}

__all__ = [
    "DEFAULT_DTYPE", "DTYPES", "MATMUL_STAGES", "PRESETS", "STAGES",
    "Backend", "DTypeError", "DeviceUnavailableError", "KernelError", "Problem", "ProblemError",
    "ReadOnlyError", "ShapeError", "TooLargeError", "UnknownNameError",
    "available_backends", "backend", "known_backends", "memory_needed", "parse_problem",
]


def known_backends() -> list[str]:
    """Every backend family this package implements, present here or not."""
    return list(_REGISTRY)


def _module(name: str):
    if not isinstance(name, str):
        raise UnknownNameError(f"a backend name must be a string, got {name!r}; valid: {', '.join(_REGISTRY)}")
    family = name.partition(":")[0]
    if family not in _REGISTRY:
        raise UnknownNameError(f"unknown backend {name!r}; valid: {', '.join(_REGISTRY)} (torch-cuda:INDEX for another GPU)")
    return importlib.import_module(_REGISTRY[family])


def backend(name: str, dtype: str = DEFAULT_DTYPE) -> Backend:
    """The backend ``name`` (e.g. ``numpy``, ``torch-cuda:1``) in ``dtype``.

    Raises UnknownNameError for a name not in the registry and DeviceUnavailableError when
    its device is absent here.
    """
    return Backend(name, _module(name), dtype)


def available_backends() -> list[str]:
    """The backend names that can run on this machine, in registry order."""
    names: list[str] = []
    for module_name in dict.fromkeys(_REGISTRY.values()):
        names += importlib.import_module(module_name).devices()
    return names

