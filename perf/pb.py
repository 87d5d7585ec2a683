"""The one place that touches pytest-benchmark's internals (private attributes of its fixture and
session, its storage object). Everything else in the suite calls these functions, so an upgrade
of pytest-benchmark that moves them breaks here, loudly, in ``tests/test_pb_adapter.py``.

Checked against pytest-benchmark 5.1 to 5.3 (pyproject.toml pins ``<6``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

# What this module reads or writes, by object: the adapter test asserts each is still there.
FIXTURE_ATTRIBUTES = ("_timer", "_min_time", "_max_time", "_min_rounds", "_make_stats", "_mode", "disabled", "extra_info",
                      "fullname", "group", "stats")
SESSION_ATTRIBUTES = ("storage", "save", "autosave", "disabled", "logger", "columns")
SESSION_METHODS = ("display",)
FILE_STORAGE_ATTRIBUTES = ("path", "default_machine_id", "save", "query", "load")


def session(config: pytest.Config):
    """pytest-benchmark's session object (``config._benchmarksession``), or None before/without it."""
    return getattr(config, "_benchmarksession", None)


# --------------------------------------------------------------------------- the fixture


def limits(benchmark) -> tuple[float, float, int]:
    """(min_time, max_time, min_rounds) of a benchmark, as set by --benchmark-min-time etc. and its marker."""
    return benchmark._min_time, benchmark._max_time, benchmark._min_rounds


def config_limits(config: pytest.Config) -> tuple[float, float, int]:
    """(max_time, min_time, min_rounds) as the session's --benchmark-* options set them."""
    return (float(config.getoption("benchmark_max_time")), float(config.getoption("benchmark_min_time")),
            int(config.getoption("benchmark_min_rounds")))


def record(benchmark, samples: Sequence[float], timer: Callable[[], float] | None = None, *, iterations: int = 1,
           group: str | None = None) -> None:
    """Make ``samples`` (one value per round, per call) the benchmark's stats, as if pytest-benchmark had
    measured them, with ``timer`` recorded as its clock. The suite measures itself (in this process,
    in child processes or under callgrind); pytest-benchmark stores, displays and compares."""
    if timer is not None:
        benchmark._timer = timer
    if group is not None:
        benchmark.group = group
    stats = benchmark._make_stats(iterations)
    for value in samples:
        stats.stats.update(value)
    mark_used(benchmark)


def mark_used(benchmark) -> None:
    """The suite measures (or deliberately does not): pytest-benchmark must not warn 'fixture was not used'."""
    benchmark._mode = "perf"


def timer_name(benchmark) -> str:
    timer = benchmark._timer
    return getattr(timer, "__name__", str(timer))


# --------------------------------------------------------------------------- the session and its storage


def open_storage(config: pytest.Config):
    """The storage --benchmark-storage names, opened as pytest-benchmark opens it, before its session
    exists (its pytest_configure, which loads --benchmark-compare, runs after the suite's)."""
    from pytest_benchmark.logger import Logger
    from pytest_benchmark.utils import load_storage

    return load_storage(config.getoption("benchmark_storage"), logger=Logger(Logger.QUIET, config=config),
                        default_machine_id=machine_id(), netrc=config.getoption("benchmark_netrc", None))


def machine_id() -> str:
    """The subfolder pytest-benchmark's file storage saves into for this interpreter (Linux-CPython-3.11-64bit)."""
    from pytest_benchmark.utils import get_machine_id

    return get_machine_id()


def is_file_storage(storage) -> bool:
    return all(hasattr(storage, a) for a in ("path", "default_machine_id", "query"))


def folder_of(storage) -> Path:
    """The folder a file storage saves into: PATH/<machine id>."""
    return Path(storage.path) / storage.default_machine_id if storage.default_machine_id else Path(storage.path)


def saved_files(storage) -> list[Path]:
    """Every saved run of the storage (NNNN_*.json of this machine id), oldest first."""
    return list(storage.query("[0-9][0-9][0-9][0-9]_"))


def query(storage, spec: str) -> list[Path]:
    """The files ``--benchmark-compare=spec`` names (a number, a name prefix, 'machine/glob', a path);
    ValueError for a spec that is none of these."""
    return list(storage.query(spec))


def dumps(output_json: dict) -> bytes:
    """A run as pytest-benchmark writes it to a file."""
    from pytest_benchmark.utils import safe_dumps

    return safe_dumps(output_json, ensure_ascii=True, indent=4).encode()


def storage_folder(bs) -> Path | None:
    """The folder this session saves into (file storage), or None (elasticsearch)."""
    return folder_of(bs.storage) if is_file_storage(bs.storage) else None


def set_compare(config: pytest.Config, value: str | bool | None) -> None:
    """Point --benchmark-compare at ``value`` before pytest-benchmark loads it (its pytest_configure
    runs last): a validated file path, or None for no comparison."""
    config.option.benchmark_compare = value if value else []


def compare_option(config: pytest.Config) -> str | bool | None:
    """--benchmark-compare as given: None (absent), True (bare: the latest saved run) or a name/number/path."""
    value = config.getoption("benchmark_compare", None)
    return value if value is True or (isinstance(value, str) and value) else None  # its default is []


def wants_save(bs) -> bool:
    return bool(bs.save or bs.autosave)


def cancel_save(bs) -> None:
    """Nothing of this run is saved (a partial or failed run must not become a baseline)."""
    bs.save = bs.autosave = None


def replace_save(bs, save: Callable[[dict, str], None]) -> bool:
    """Route the storage's ``save(output_json, name)`` through ``save``; False for a storage without one."""
    if not hasattr(bs.storage, "save") or storage_folder(bs) is None:
        return False
    bs.storage.save = save
    return True


def info(bs, message: str) -> None:
    bs.logger.info(message)


def hide_tables(bs) -> None:
    """pytest-benchmark's own tables are not shown at the end of the run (the suite's summary is)."""
    bs.display = lambda tr: None


def drop_column(bs, column: str) -> None:
    """One of the columns pytest-benchmark's tables show left out (e.g. ``ops``, which a count has none of)."""
    bs.columns = [c for c in bs.columns if c != column]
