"""Problems: sizes, dtype, learning rate and seed; the presets; inputs; the FLOP and byte model.

Shapes are named once, here, and everywhere else by these names:
N samples, D_in inputs, H hidden units, D_out outputs.
x: (N, D_in), y: (N, D_out), w1: (D_in, H), w2: (H, D_out).
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, replace

import numpy as np

from .errors import ProblemError, UnknownNameError

DTYPES = ("float32", "float64")
DEFAULT_DTYPE = "float32"

# Stage names in execution order: the contract every backend implements.
STAGES = (
    "hidden",
    "relu",
    "output",
    "loss",
    "grad_y_pred",
    "grad_w2",
    "grad_h_relu",
    "relu_backward",
    "grad_w1",
    "sgd_update",
)
MATMUL_STAGES = ("hidden", "output", "grad_w2", "grad_h_relu", "grad_w1")
# The forms of the whole step: the tutorial's code, the allocating step, the workspace step, its device graph.
STEP_FORMS = ("tutorial_step", "train_step", "workspace_step", "graph_step")
OUT_SUFFIX = "_out"  # "relu_out": the out= (workspace) form of a stage; the same work as the stage


@dataclass(frozen=True)
class Problem:
    """One problem: the four sizes, the dtype, the learning rate and the input seed."""

    N: int
    D_in: int
    H: int
    D_out: int
    dtype: str = DEFAULT_DTYPE
    lr: float = 1e-6
    seed: int = 0
    name: str = ""

    def __post_init__(self) -> None:
        for dim in ("N", "D_in", "H", "D_out"):
            value = getattr(self, dim)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ProblemError(f"{dim} must be a positive integer, got {value!r}")
            object.__setattr__(self, dim, int(value))
        if self.dtype not in DTYPES:
            raise UnknownNameError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        check_lr(self.lr)
        if not self.name:
            object.__setattr__(self, "name", f"{self.N}x{self.D_in}x{self.H}x{self.D_out}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.D_in, self.H, self.D_out)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    def with_dtype(self, dtype: str) -> Problem:
        return replace(self, dtype=dtype)

    def inputs(self) -> dict[str, np.ndarray]:
        """x, y, w1, w2 drawn from a standard normal, deterministic in the seed.

        Drawn once in float64 and then cast, so every backend and dtype sees the same values.
        """
        rng = np.random.default_rng(self.seed)
        shapes = {
            "x": (self.N, self.D_in),
            "y": (self.N, self.D_out),
            "w1": (self.D_in, self.H),
            "w2": (self.H, self.D_out),
        }
        return {k: rng.standard_normal(s).astype(self.dtype) for k, s in shapes.items()}

    def flops(self, stage: str) -> int:
        """Floating-point operations of one call of ``stage`` (its ``_out`` form, or a step of STEP_FORMS)."""
        return _model(self, stage)[0]

    def bytes(self, stage: str) -> int:
        """Bytes ``stage`` must move at minimum: each input read once, each output written once."""
        return _model(self, stage)[1] * self.itemsize


def check_lr(lr: object) -> float:
    """Return ``lr`` as a float if it is a finite real number, else raise ProblemError."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
        raise ProblemError(f"learning rate must be a finite real number, got {_short_repr(lr)}")
    try:
        value = float(lr)
    except OverflowError:  # an int beyond the float range, e.g. 10**400
        value = math.inf
    if not math.isfinite(value):
        raise ProblemError(f"learning rate must be a finite real number, got {_short_repr(lr)}")
    return value


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit // 2]}... ({len(text)} characters)"


# Allocator slack over the live arrays counted below: freed blocks the process has not returned.
MEMORY_HEADROOM = 1.5


def memory_needed(problem: Problem, *, check: bool = True, on_host: bool = True) -> int:
    """Bytes a run of ``problem`` holds at its peak, with headroom: what a size is refused on before allocating.

    On its device: x, y, both weights twice (the originals every benchmark round restores
    from, and the working copies) and every intermediate of a step, temporaries included.
    Where the device is the host (``on_host``), the host's arrays count too: with ``check``
    (the perf suite's reference check) every intermediate once in the problem's dtype, kept
    for the whole run, and once more in float64 with the reference's weight update; without
    it, the drawn inputs, which are freed before the first step.
    """
    N, D_in, H, D_out = problem.shape
    weights = D_in * H + H * D_out
    inputs = N * D_in + N * D_out + weights
    device = (N * D_in + 3 * N * D_out + 4 * weights + 5 * N * H) * problem.itemsize
    if not on_host:
        total = device
    elif check:
        intermediates = N * D_in + 3 * N * D_out + 2 * weights + 4 * N * H
        total = device + intermediates * problem.itemsize + (intermediates + 2 * weights) * 8
    else:
        # Drawn in float64 one at a time, cast, then copied to the device: both copies at once.
        largest = max(N * D_in, N * D_out, D_in * H, H * D_out)
        total = max(device, 2 * inputs * problem.itemsize + 8 * largest)
    return int(MEMORY_HEADROOM * total)


def _model(p: Problem, stage: str) -> tuple[int, int]:
    """(flops, elements moved) for one call; sgd_update counts both weights, as a step does."""
    N, D_in, H, D_out = p.shape
    weights = D_in * H + H * D_out
    table = {
        "hidden": (2 * N * D_in * H, N * D_in + D_in * H + N * H),
        "relu": (N * H, 2 * N * H),
        "output": (2 * N * H * D_out, N * H + H * D_out + N * D_out),
        "loss": (3 * N * D_out, 2 * N * D_out),
        "grad_y_pred": (2 * N * D_out, 3 * N * D_out),
        "grad_w2": (2 * N * H * D_out, N * H + N * D_out + H * D_out),
        "grad_h_relu": (2 * N * D_out * H, N * D_out + H * D_out + N * H),
        "relu_backward": (N * H, 3 * N * H),
        "grad_w1": (2 * N * D_in * H, N * D_in + N * H + D_in * H),
        "sgd_update": (2 * weights, 3 * weights),
    }
    if stage.endswith(OUT_SUFFIX) and stage.removesuffix(OUT_SUFFIX) in STAGES:
        stage = stage.removesuffix(OUT_SUFFIX)
    if stage in STEP_FORMS:
        # Compulsory traffic of the whole step: read x, y and both weights, write both weights.
        flops = sum(f for f, _ in table.values())
        return flops, N * D_in + N * D_out + 2 * weights
    # Roofline probes: an N x D_in by D_in x H matmul, and a copy of an N x D_in array.
    table["peak_matmul"] = (2 * N * D_in * H, N * D_in + D_in * H + N * H)
    table["peak_copy"] = (0, 2 * N * D_in)
    if stage not in table:
        raise UnknownNameError(f"unknown stage {stage!r}; valid: {', '.join((*STAGES, *STEP_FORMS))}, "
                               f"or a stage with {OUT_SUFFIX}")
    return table[stage]


# Append-only: these values are part of every saved baseline. Never change or remove one.
PRESETS: dict[str, Problem] = {
    # The tutorial's problem.
    "seed": Problem(64, 1000, 100, 10, lr=1e-6, name="seed"),
    # Every matmul >= 1 GFLOP: compute-bound on a CPU.
    "compute": Problem(1024, 1024, 1024, 512, lr=6e-9, name="compute"),
    # GPU scale: every matmul >= 34 GFLOP.
    "gpu": Problem(4096, 4096, 4096, 1024, lr=5e-11, name="gpu"),
    # Steps of the size sweep between the tutorial's size and GPU scale.
    "n256": Problem(256, 1024, 256, 64, lr=9e-8, name="n256"),
    "n512": Problem(512, 1024, 512, 128, lr=2.3e-8, name="n512"),
    "n2048": Problem(2048, 2048, 2048, 512, lr=7e-10, name="n2048"),
}
# Named lists of presets, expanded wherever sizes are given.
SWEEPS: dict[str, tuple[str, ...]] = {
    "sweep": ("seed", "n256", "n512", "compute", "n2048", "gpu"),
}


_INTEGER = re.compile(r"[+-]?[0-9]+")


def parse_problem(spec: str, dtype: str = DEFAULT_DTYPE) -> Problem:
    """A preset name or an explicit ``N,D_in,H,D_out`` (also ``NxD_inxHxD_out``)."""
    text = spec.strip()
    if text in PRESETS:
        return PRESETS[text].with_dtype(dtype)
    parts = [part.strip() for part in text.replace("x", ",").split(",")]
    if len(parts) == 4 and all(_INTEGER.fullmatch(part) for part in parts):
        N, D_in, H, D_out = (int(part) for part in parts)
        for dim, value in zip(("N", "D_in", "H", "D_out"), (N, D_in, H, D_out)):
            if value < 1:
                raise ProblemError(f"size {spec!r}: {dim} must be a positive integer, got {value}")
        return Problem(N, D_in, H, D_out, dtype=dtype, lr=default_lr(N, D_in, H, D_out))
    raise UnknownNameError(
        f"unknown size {spec!r}; valid: a preset ({', '.join(PRESETS)}), a sweep ({', '.join(SWEEPS)}) "
        "or N,D_in,H,D_out (four positive integers)"
    )


def default_lr(N: int, D_in: int, H: int, D_out: int) -> float:
    """A learning rate below the stability limit of plain SGD on standard-normal data of these sizes.

    One over an estimate of the loss's largest curvature: for w2 that of 2 h_relu.T @ h_relu
    (entries of h_relu have mean square D_in/2, mean about 0.4 sqrt(D_in), hence a rank-one
    part of N D_in 0.16 H); for w1, twice the product of the largest squared singular values
    of x and w2. At the tutorial's size this gives 4.7e-7, half its 1e-6.
    """
    w2 = 2 * N * D_in * (0.5 + 0.16 * H)
    w1 = 2 * (math.sqrt(N) + math.sqrt(D_in)) ** 2 * (math.sqrt(H) + math.sqrt(D_out)) ** 2
    return 1 / max(w2, w1)
