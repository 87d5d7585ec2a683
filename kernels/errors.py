"""The exceptions the kernels package raises for bad input, all before any work is done.

Each is a subclass of ``KernelError`` and of the built-in type a caller would expect, so
``except ValueError`` keeps working; every message is one line naming what was wrong and
what is accepted.
"""


class KernelError(Exception):
    """Base class of every error the kernels package raises on bad input."""


class UnknownNameError(KernelError, ValueError):
    """An unknown backend, preset, stage or dtype name (the message lists the valid ones)."""


class DeviceUnavailableError(KernelError, RuntimeError):
    """A known backend whose device is not present on this machine (the message says why)."""


class ShapeError(KernelError, ValueError):
    """Arguments whose shapes do not fit together (the message names the stage and shapes)."""


class DTypeError(KernelError, TypeError):
    """Arguments of mixed dtypes, or of another dtype, type or device than the backend's."""


class ProblemError(KernelError, ValueError):
    """An invalid problem: a non-positive size, a non-finite learning rate, a bad size string."""


class ReadOnlyError(KernelError, ValueError):
    """An ``out=`` buffer or a weight updated in place that cannot be written (the message says why)."""


class TooLargeError(KernelError, MemoryError):
    """A problem too large for the memory free on its device (the message gives both sizes)."""
