"""The exceptions the perf suite raises on purpose, all under ``PerfError``.

Every message is one line naming what was wrong and what is accepted. Which exit code each
becomes is decided where it is caught: ``perf.cli.run_main`` for the ``python -m`` commands
(2), the pytest plugin for ``pytest perf`` (4 for bad input, 6 for a failed environment).
"""


class PerfError(Exception):
    """Base class of every error this suite raises on purpose: one line."""


class UsageError(PerfError):
    """A bad argument, an unusable input or a failed environment of a ``python -m`` command."""


class ResultsError(PerfError):
    """A results or verdict file that cannot be used: the message names the file and the field."""


class GateError(PerfError, ValueError):
    """Bad input to the gate's statistics (a threshold, alpha, a confidence level)."""


class BaselineError(PerfError):
    """A baseline ``--benchmark-compare`` names that cannot be used (missing, unreadable, foreign, another metric)."""


class MeasureError(PerfError):
    """A measuring process that failed, was killed or replied nonsense (the message names the benchmark)."""


class CallgrindError(MeasureError):
    """Counting under callgrind cannot go on (valgrind absent, no compiler for the shim, a damaged dump)."""
