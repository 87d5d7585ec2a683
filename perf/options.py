"""The ``--perf-*`` options: declared once, each also settable in the ini file, checked on entry.

Precedence: command line, then the ini file, then the default here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

import kernels
from kernels.problem import SWEEPS, Problem

from . import paths
from .errors import GateError
from .gate import parse_threshold
from .metric import Metric

TIMERS = ("auto", "sync", "events")
LAUNCHES = ("auto", "fork", "fresh")
CONFIRMS = ("ab", "processes")
WINDOWS = ("code", "commits", "steps")
HISTORY = 5  # default of ini perf_history

# name -> (default, help); the ini key is the name with "-" turned into "_".
OPTIONS: dict[str, tuple[str, str]] = {
    "perf-backend": ("available", "backends to time, comma-separated, or 'available' (every backend present here)"),
    "perf-size": ("seed,compute", f"problem sizes, comma-separated: presets ({', '.join(kernels.PRESETS)}), "
                  f"sweeps ({', '.join(SWEEPS)}: {', '.join(SWEEPS['sweep'])}) "
                  "and explicit sizes N,D_in,H,D_out (four integers) or NxD_inxHxD_out"),
    "perf-dtype": ("float32", "dtypes, comma-separated: float32, float64"),
    "perf-threads": ("1", "threads for torch and numpy's BLAS: a positive integer, or 'auto' for all cores"),
    "perf-timer": ("auto", "timer for accelerators: auto (= sync), sync (synchronise, then perf_counter), "
                   "events (CUDA events); the CPU always uses perf_counter"),
    "perf-threshold": ("auto", "slowdown a benchmark must exceed to regress, e.g. 5%; auto: 5% for time, 1% for counts "
                       "(overridden per benchmark by perf_thresholds and the perf_threshold marker)"),
    "perf-alpha": ("0.05", "suite-wide false-alarm rate of the gate (Bonferroni over the compared benchmarks)"),
    "perf-metric": ("time", "what each benchmark measures: time (seconds per call, every backend), or instructions "
                    "or cycles per call counted under valgrind's callgrind (CPU backends: deterministic)"),
    "perf-processes": ("auto", "fresh processes each benchmark is measured in, one after the other, each with its share "
                       "of --benchmark-max-time; the gate compares processes, not rounds (1: this process only); "
                       "auto: 6 for time, 1 for counts (one valgrind process per backend)"),
    "perf-launch": ("auto", "how the processes of --perf-processes start: fork (one after the other, each a process that "
                    "imports and collects once and forks a child per benchmark), fresh (a new interpreter each), or "
                    "auto: fork where every selected backend runs on the CPU, fresh otherwise (a CUDA context does "
                    "not survive a fork)"),
    "perf-confirm": ("ab", "how a suspected regression against a saved baseline is confirmed: ab (an interleaved A/B of "
                     "the baseline's own commit against this run's code, where the repository has that commit; else as "
                     "processes) or processes (measured again in as many more processes)"),
    "perf-baseline-window": ("code", "which saved runs bare --benchmark-compare pools into its baseline (up to ini "
                             "perf_history): code (the newest run and older runs of the same code), commits (the "
                             "newest runs, whatever their code) or steps (per benchmark, the runs since the last step "
                             "its history shows)"),
    "perf-report-json": ("", "write the gate's verdicts as JSON to this path (its directory must exist and be writable)"),
    "perf-report-md": ("", "append the gate's verdicts as Markdown to this path, e.g. $GITHUB_STEP_SUMMARY "
                       "(its directory must exist and be writable)"),
}
FLAGS: dict[str, str] = {
    "perf-stack-change": "compare against a baseline of the same hardware with another software stack (torch, numpy, "
                         "BLAS, CUDA, driver, Python): an upgrade measured, reported as a stack change",
    "perf-stock-tables": "show pytest-benchmark's own tables (min, max, mean, ... per group) at the end of the run "
                         "instead of the suite's summary grid",
    "perf-allow-foreign-baseline": "compare against a baseline recorded on a different machine fingerprint",
    "perf-save-failed": "save the run (--benchmark-save/--benchmark-autosave) even when some of its tests failed",
}


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("perf", "performance suite (kernels of the two-layer ReLU training step)")
    for name, (default, text) in OPTIONS.items():
        group.addoption(f"--{name}", dest=name.replace("-", "_"), default=None, help=f"{text} (default: {default})")
        parser.addini(name.replace("-", "_"), help=text, default=None)
    for name, text in FLAGS.items():
        group.addoption(f"--{name}", dest=name.replace("-", "_"), action="store_true", default=None, help=text)
        parser.addini(name.replace("-", "_"), help=text, type="bool", default=False)
    parser.addini("perf_history", default=None,
                  help=f"saved runs of this machine whose spread sets the run-to-run drift floor of the gate: "
                       f"a positive integer (default {HISTORY})")
    parser.addini("perf_thresholds", type="linelist", default=[],
                  help="per-benchmark thresholds, one 'PATTERN = 25%' a line; PATTERN is an fnmatch pattern "
                       "over benchmark ids (e.g. seed-relu-*) or a group name (e.g. 'seed relu')")


def _raw(config: pytest.Config, name: str) -> tuple[str, str]:
    """(value, where it came from) by precedence: command line, ini file, default."""
    key = name.replace("-", "_")
    value = config.getoption(key)
    if value is not None:
        return str(value), f"--{name}"
    value = config.getini(key)
    if value not in (None, "", []):
        return str(value), f"ini option {key}"
    return OPTIONS[name][0], f"default of --{name}"


@dataclass(frozen=True)
class Settings:
    backends: tuple[str, ...]          # asked for by name; empty = every available
    sizes: tuple[Problem, ...]
    dtypes: tuple[str, ...]
    threads: int
    timer: str
    metric: Metric
    processes: int
    launch: str
    confirm: str
    baseline_window: str
    threshold: float
    alpha: float
    thresholds: tuple[tuple[str, float], ...]
    report_json: str
    report_md: str
    allow_foreign_baseline: bool
    save_failed: bool
    stock_tables: bool = False
    stack_change: bool = False
    history: int = HISTORY             # ini perf_history: saved runs whose spread sets the drift floor

    def child_args(self) -> list[str]:
        """The options that make another ``pytest perf`` process measure what this run measures, as it does."""
        return [f"--perf-backend={','.join(self.backends) or 'available'}",
                f"--perf-size={','.join(p.name for p in self.sizes)}", f"--perf-dtype={','.join(self.dtypes)}",
                f"--perf-threads={self.threads}", f"--perf-timer={self.timer}", f"--perf-metric={self.metric.value}"]


def _split(text: str, separators: str = ",") -> list[str]:
    for sep in separators[1:]:
        text = text.replace(sep, separators[0])
    return [part.strip() for part in text.split(separators[0]) if part.strip()]


def parse_sizes(text: str, dtype: str = kernels.DEFAULT_DTYPE) -> list[Problem]:
    """'seed,compute,64,1000,100,10' -> problems: presets, and explicit sizes as four integers in a row."""
    sizes, digits = [], []
    for token in _split(text, ",; "):
        if token.lstrip("-").isdigit():
            digits.append(token)
            if len(digits) == 4:
                sizes.append(kernels.parse_problem(",".join(digits), dtype))
                digits = []
            continue
        if digits:
            break
        for name in SWEEPS.get(token, (token,)):
            sizes.append(kernels.parse_problem(name, dtype))
    if digits:
        raise kernels.UnknownNameError(
            f"incomplete size {','.join(digits)!r}: an explicit size is four integers N,D_in,H,D_out"
        )
    if not sizes:
        raise kernels.UnknownNameError(f"no size named; valid: presets ({', '.join(kernels.PRESETS)}) or N,D_in,H,D_out")
    return list({p.name: p for p in sizes}.values())  # each once, in the order first named


def settings(config: pytest.Config) -> Settings:
    """Every --perf-* value, parsed; a bad one is a one-line UsageError saying where it came from."""

    def parse(name: str, fn):
        text, where = _raw(config, name)
        try:
            return fn(text)
        except (kernels.KernelError, GateError, ValueError) as exc:
            raise pytest.UsageError(f"{where}={text!r}: {exc}") from None

    backends = parse("perf-backend", _parse_backends)
    dtypes = parse("perf-dtype", _parse_dtypes)
    sizes = parse("perf-size", parse_sizes)
    threads = parse("perf-threads", _parse_threads)
    timer = parse("perf-timer", _choice(TIMERS, "timer"))
    metric = parse("perf-metric", _parse_metric)
    processes = parse("perf-processes", _or_auto(metric.defaults.processes, _parse_positive))
    launch = parse("perf-launch", _choice(LAUNCHES, "launch method"))
    confirm = parse("perf-confirm", _choice(CONFIRMS, "confirmation"))
    window = parse("perf-baseline-window", _choice(WINDOWS, "window"))
    threshold = parse("perf-threshold", _or_auto(metric.defaults.threshold, parse_threshold))
    alpha = parse("perf-alpha", _parse_alpha)
    if timer == "events":
        devices = {n: kernels.backend(n).device_name for n in backends or kernels.available_backends()}
        other = [n for n, device in devices.items() if device != "cpu" and not device.startswith("cuda")]
        if other:
            text, where = _raw(config, "perf-timer")
            raise pytest.UsageError(f"{where}={text!r}: CUDA events time CUDA devices only, not {', '.join(other)}; "
                                    "use --perf-timer=sync (or auto) for them")
    thresholds = []
    for line in config.getini("perf_thresholds"):
        pattern, sep, value = line.rpartition("=")
        try:
            if not sep or not pattern.strip():
                raise GateError("expected 'PATTERN = THRESHOLD', e.g. 'seed-relu-* = 25%'")
            thresholds.append((pattern.strip(), parse_threshold(value.strip())))
        except GateError as exc:
            raise pytest.UsageError(f"ini option perf_thresholds line {line!r}: {exc}") from None
    history = _ini(config, "perf_history", _parse_history, HISTORY,
                   f"expected a positive integer, the number of saved runs (default {HISTORY})")

    def flag(name: str) -> bool:
        value = config.getoption(name)
        if value is not None:
            return bool(value)
        return _ini(config, name, _parse_bool, False, "expected true or false (or yes/no, on/off, 1/0)")

    # Each once: a repeated name would run twice under ids pytest renames (no baseline matches them).
    return Settings(
        backends=tuple(dict.fromkeys(backends)), sizes=tuple(sizes), dtypes=tuple(dict.fromkeys(dtypes)),
        threads=threads, timer=timer, metric=metric, processes=processes, launch=launch,
        confirm=confirm, baseline_window=window,
        threshold=threshold, alpha=alpha, thresholds=tuple(thresholds),
        report_json=parse("perf-report-json", _check_report_path), report_md=parse("perf-report-md", _check_report_path),
        allow_foreign_baseline=flag("perf_allow_foreign_baseline"), save_failed=flag("perf_save_failed"),
        stock_tables=flag("perf_stock_tables"), stack_change=flag("perf_stack_change"), history=history,
    )


def _ini(config: pytest.Config, key: str, parse, default, accepted: str):
    """An ini-only value, parsed; unset is ``default``, a bad one a one-line UsageError naming the key."""
    try:
        value = config.getini(key)
    except (pytest.UsageError, ValueError) as exc:  # pytest's own parsing of a typed value: 'maybe' for a bool
        raise pytest.UsageError(f"ini option {key}: {exc}; {accepted}") from None
    if value is None or value == "":
        return default
    try:
        return parse(value)
    except ValueError:
        raise pytest.UsageError(f"ini option {key}={value!r}: {accepted}") from None


def _parse_history(value: object) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdecimal() or int(text) < 1:
        raise ValueError(value)
    return int(text)


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("y", "yes", "t", "true", "on", "1"):
        return True
    if text in ("n", "no", "f", "false", "off", "0"):
        return False
    raise ValueError(value)


def _check_report_path(text: str) -> str:
    """A report path the run can write at its end, checked now; nothing is created."""
    why = paths.unwritable(text) if text else ""
    if why:
        raise ValueError(why)
    return text


def _parse_backends(text: str) -> list[str]:
    if text.strip() == "available":
        return []
    names = _split(text)
    if not names:
        raise ValueError("no backend named; give names such as numpy,torch-cpu or 'available'")
    for name in names:
        kernels.backend(name)  # unknown -> UnknownNameError, absent -> DeviceUnavailableError
    return names


def _parse_dtypes(text: str) -> list[str]:
    names = _split(text)
    for name in names:
        if name not in kernels.DTYPES:
            raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(kernels.DTYPES)}")
    if not names:
        raise ValueError(f"no dtype named; valid: {', '.join(kernels.DTYPES)}")
    return names


def _parse_threads(text: str) -> int:
    if text.strip() == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if text.strip().isdecimal() and int(text) > 0:
        return int(text)
    raise ValueError("expected a positive integer or 'auto'")


def _or_auto(auto, parse):
    """A parser that reads 'auto' as ``auto`` and anything else with ``parse``."""
    return lambda text: auto if text.strip() == "auto" else parse(text)


def _parse_positive(text: str) -> int:
    if text.strip().isdigit() and int(text) > 0:
        return int(text)
    raise ValueError("expected a positive integer or 'auto'")


def _parse_metric(text: str) -> Metric:
    try:
        return Metric(text.strip())
    except ValueError:
        raise ValueError(f"unknown metric; valid: {', '.join(m.value for m in Metric)}") from None


def _choice(accepted: tuple[str, ...], what: str):
    """A parser that takes one of ``accepted`` (``what`` they are, for the error)."""

    def parse(text: str) -> str:
        if text.strip() not in accepted:
            raise ValueError(f"unknown {what}; valid: {', '.join(accepted)}")
        return text.strip()

    return parse


def _parse_alpha(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise ValueError("expected a probability between 0 and 1, e.g. 0.05")
    return value
