"""What measuring returns, whatever measured: the typed result every strategy hands back, the line a
measuring process sends its parent, and the interface the strategies share.

Strategies (asv's ``Spawner`` and ``ForkServer`` have one interface too):

- this process: ``perf.measure`` times a case where it is (a child's own work, ``--perf-processes 1``);
- fresh processes: ``perf.processes.FreshProcesses``, each a plain ``pytest perf`` of the selection;
- the counting zygote: ``perf.counting.CountingZygotes``, a fork per count under callgrind.

Each returns ``{benchmark name: Measured}``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .errors import MeasureError
from .progress import Progress
from .statistic import DEFAULT, Process, summarize


@dataclass(frozen=True)
class ProcessResult:
    """One benchmark measured in one process: its samples (per round, per call) and, when counted,
    what callgrind saw per call (instructions, branches, ...)."""

    name: str
    samples: tuple[float, ...]
    iterations: int = 1
    info: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"name": self.name, "samples": list(self.samples), "iterations": self.iterations, "info": dict(self.info)}

    def line(self) -> str:
        """One JSON line, as a measuring process sends it."""
        return json.dumps(self.as_dict(), allow_nan=False) + "\n"

    @classmethod
    def from_line(cls, text: str, where: str) -> ProcessResult:
        """The result a line holds; MeasureError naming ``where`` for anything else."""
        try:
            return cls.from_dict(json.loads(text), where)
        except ValueError as exc:
            raise MeasureError(f"{where}: a result line that is not JSON ({exc})") from None

    @classmethod
    def from_dict(cls, doc: object, where: str) -> ProcessResult:
        """The result a parsed line holds; MeasureError naming ``where`` for anything else."""
        try:
            samples = tuple(float(v) for v in doc["samples"])
            info = {str(k): float(v) for k, v in doc.get("info", {}).items()}
            result = cls(str(doc["name"]), samples, int(doc.get("iterations", 1)), info)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise MeasureError(f"{where}: a result line that cannot be read ({type(exc).__name__}: {exc})") from None
        if not result.samples or not all(math.isfinite(v) and v >= 0 for v in result.samples):
            raise MeasureError(f"{where}: {result.name}: no samples, or samples that are not finite numbers >= 0")
        return result


def append(path: str | os.PathLike, result: ProcessResult) -> None:
    """Add ``result`` to the results file of a measuring process (one line each, in the order measured)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(result.line())


def read(path: str | os.PathLike, where: str) -> list[ProcessResult]:
    """Every result a measuring process wrote to ``path`` ([] when it wrote none)."""
    try:
        lines = [line for line in open(path, encoding="utf-8").read().splitlines() if line.strip()]
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise MeasureError(f"{where}: its results cannot be read: {exc}") from None
    return [ProcessResult.from_line(line, where) for line in lines]


@dataclass
class Measured:
    """One benchmark measured in one or more processes: each process's result, in order."""

    per_process: list[ProcessResult] = field(default_factory=list)

    @property
    def samples(self) -> list[float]:
        return [s for r in self.per_process for s in r.samples]

    @property
    def processes(self) -> list[Process]:
        return [Process.of(r.samples) for r in self.per_process]

    def values(self, statistic: str = DEFAULT) -> list[float]:
        """One number per process: the gate's evidence."""
        return [summarize(r.samples, statistic) for r in self.per_process]

    def counted(self) -> dict[str, float]:
        """What callgrind saw per call (instructions, branches, ...), the mean over the processes; {} for times."""
        keys = [k for k in self.per_process[0].info if all(k in r.info for r in self.per_process)] if self.per_process else []
        return {k: sum(r.info[k] for r in self.per_process) / len(self.per_process) for k in keys}


class Strategy(Protocol):
    """A way of measuring a selection of cases: in fresh processes, in forks of a zygote, ..."""

    processes: int

    def measure(self, cases: Mapping[str, object], progress: Progress, *, label: str = "process") -> dict[str, Measured]:
        """Measure every case (``{benchmark name: perf.cases.Case}``) ``processes`` times, one ``progress`` step
        per case and process; MeasureError, one line, on a failure."""
        ...


def gather(into: dict[str, Measured], results: Sequence[ProcessResult]) -> None:
    """Add one process's results to ``into``, benchmark by benchmark."""
    for r in results:
        into.setdefault(r.name, Measured()).per_process.append(r)
