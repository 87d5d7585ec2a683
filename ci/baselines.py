"""Where a runner's baselines live: pytest-benchmark's own file storage, one per runner class and machine.

Layout, on the runner (ROOT: --root, else $RUNNER_BASELINE_DIR, else ~/.relu-perf-baselines)::

    ROOT/<class>/.lock                  one writer per runner class at a time (saves, pruning, reset)
    ROOT/<class>/<key>/                 the --benchmark-storage of this class and machine
    ROOT/<class>/<key>/<machine id>/NNNN_<commit>.json
                                        the saved runs (pytest-benchmark names the folder
                                        {system}-{implementation}-{python}-{bits}); the newest is the
                                        baseline, the last KEEP give the plugin's run-to-run drift

<class> is the runner's label set, sorted and joined ("gpu-linux-self-hosted"); <key> is
``perf.machine.key`` of the machine fingerprint (GPU, driver, CUDA, torch, CPU, Python, numpy),
so a driver upgrade starts a new baseline instead of being compared with the old one.

Saving is the perf plugin's (``pytest perf --benchmark-storage=file://ROOT/<class>/<key>
--benchmark-save=NAME``): written whole under the next free number, never replacing a file, and
refused for a run with failed tests. What is added here: the lock, pruning, listing, reset, and
the one-time migration of the earlier layout (``current`` pointer, ``snapshots/<name>/baseline.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path

from perf import machine, results
from perf.errors import ResultsError, UsageError
from perf.results import Run

ROOT_VARIABLE = "RUNNER_BASELINE_DIR"
DEFAULT_ROOT = "~/.relu-perf-baselines"
KEEP = 100  # saved runs kept per class and machine by default: the history perf.history reads
MIGRATED = 5  # snapshots of the earlier layout moved into the storage
PARTIAL = ".partial-"  # results.save_new's temporary files: what a killed save leaves
OLD_POINTER, OLD_SNAPSHOTS = "current", "snapshots"  # the layout before the storage (migrated once)


class StoreError(UsageError):
    """Bad store input or state: one line, exit status 2."""


class LockBusyError(StoreError):
    """Another process holds the class's lock."""


def root(explicit: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(explicit or env.get(ROOT_VARIABLE) or DEFAULT_ROOT).expanduser()


def labels(runner_class: str | Sequence[str]) -> list[str]:
    """'self-hosted, linux, gpu', '["self-hosted","linux","gpu"]' or a list -> sorted unique lowercase labels."""
    if isinstance(runner_class, str):
        text = runner_class.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except ValueError as exc:
                raise StoreError(f"runner class {runner_class!r}: not a JSON list of labels ({exc})") from None
            if not isinstance(items, list):
                raise StoreError(f"runner class {runner_class!r}: not a JSON list of labels")
        else:
            items = text.split(",")
    else:
        items = list(runner_class)
    found = sorted({str(i).strip().lower() for i in items if str(i).strip()})
    if not found:
        raise StoreError(f"runner class {runner_class!r}: no labels")
    return found


def safe_name(text: str) -> str:
    """Lowercase letters, digits and ._- only: a folder or file name part that is safe anywhere."""
    return re.sub(r"[^a-z0-9._-]+", "_", text.lower()).strip("._-") or "x"


def class_slug(runner_class: str | Sequence[str]) -> str:
    """A directory and artifact name for a runner class: its labels, sorted, joined by '-'."""
    return "-".join(safe_name(label) for label in labels(runner_class))


def machine_id() -> str:
    """The subfolder pytest-benchmark saves into, for this interpreter: the benchmark processes run
    with the same Python as the ci command."""
    from perf import pb

    return pb.machine_id()


class Store:
    """The baselines of one runner class under one root."""

    def __init__(self, root_dir: str | os.PathLike, runner_class: str | Sequence[str]) -> None:
        self.root = Path(root_dir)
        self.runner_class = class_slug(runner_class)
        self.dir = self.root / self.runner_class

    def key_dir(self, key: str) -> Path:
        """The --benchmark-storage folder of one machine."""
        if not key or safe_name(key) != key.lower() or key.startswith("."):
            raise StoreError(f"invalid fingerprint key {key!r}")
        return self.dir / key

    def runs_dir(self, key: str) -> Path:
        return self.key_dir(key) / machine_id()

    def keys(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name for p in self.dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def saved(self, key: str) -> list[Path]:
        """The saved runs of this machine, oldest first."""
        return results.saved_files(self.runs_dir(key))

    def newest(self, key: str) -> Run | None:
        """The baseline: the newest saved run, validated; None when nothing is saved.
        A newest run that does not load is an error (ResultsError), never silently passed over."""
        saved = self.saved(key)
        return results.load_run(saved[-1]) if saved else None

    @contextlib.contextmanager
    def lock(self, timeout: float = 600.0) -> Iterator[None]:
        """Exclusive across processes on this host (flock); the workflow's concurrency group covers the rest."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX: rely on the workflow's concurrency group
            yield
            return
        with open(self.dir / ".lock", "a+") as fh:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockBusyError(f"another save holds {self.dir / '.lock'} for over {timeout:.0f} s") from None
                    time.sleep(min(1.0, timeout))
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # ------------------------------------------------------------------ under the lock

    def tidy(self, key: str) -> None:
        """Remove what a killed save left (its temporary file). Under the lock: no save is running."""
        for path in self.runs_dir(key).glob(PARTIAL + "*"):
            path.unlink(missing_ok=True)

    def prune(self, key: str, keep: int = KEEP, protect: Collection[str] = ()) -> list[Path]:
        """Delete all but the newest ``keep`` saved runs, never one in ``protect`` (a run a step of the history
        points at); the deleted ones."""
        kept = {str(Path(p).resolve()) for p in protect}
        old = [p for p in (self.saved(key)[:-keep] if keep > 0 else self.saved(key)) if str(p.resolve()) not in kept]
        for path in old:
            path.unlink(missing_ok=True)
        return old

    def previous_stack(self, key: str, fingerprint: Mapping) -> str | None:
        """Another machine key of this class with this hardware and another software stack: the newest such
        (the stack this machine ran before an upgrade), or None."""
        found = []
        for other in self.keys():
            if other == key or not self.saved(other):
                continue
            try:
                run = self.newest(other)
            except ResultsError:
                continue
            if run is not None and run.fingerprint and machine.same_hardware(run.fingerprint, fingerprint):
                found.append((run.datetime, other))
        return max(found)[1] if found else None

    def old_layout(self, key: str) -> bool:
        return (self.key_dir(key) / OLD_SNAPSHOTS).is_dir()

    def migrate(self, key: str) -> int:
        """Move the earlier layout's snapshots into the storage, once: each complete snapshot up to the one
        ``current`` named, oldest first, saved as NNNN_<snapshot>.json; then the old files go. Idempotent
        (a snapshot already in the storage is not saved twice). Anything unreadable is a StoreError that
        names it: the store must be repaired (or reset), not guessed at. Returns the runs moved."""
        kd = self.key_dir(key)
        snapshots = kd / OLD_SNAPSHOTS
        if not snapshots.is_dir():
            return 0
        try:
            current = (kd / OLD_POINTER).read_bytes().decode("utf-8").strip()
        except FileNotFoundError:
            current = ""  # reset before the pointer was written: nothing was in force
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"{kd / OLD_POINTER}: unreadable ({exc}); remove it or run python -m ci.gpu_baseline "
                                "reset") from None
        names = sorted(p.name for p in snapshots.iterdir() if p.is_dir() and not p.name.startswith("."))
        keep = [n for n in names if current and n <= current][-MIGRATED:]
        payloads = []
        for name in keep:
            path = snapshots / name / "baseline.json"
            try:
                results.load_run(path)
                payloads.append((name, path.read_bytes()))
            except (ResultsError, OSError) as exc:
                raise StoreError(f"cannot migrate the old baseline: {exc}; remove {snapshots / name} "
                                    "or run python -m ci.gpu_baseline reset") from None
        folder = self.runs_dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        done = {p.name.split("_", 1)[1] for p in results.saved_files(folder)}
        for name, payload in payloads:
            if f"{name}.json" not in done:
                results.save_new(folder, name, payload)
        trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=self.dir))
        for old in (OLD_POINTER, "fingerprint.json", OLD_SNAPSHOTS):
            with contextlib.suppress(FileNotFoundError):
                os.rename(kd / old, trash / old)
        shutil.rmtree(trash, ignore_errors=True)
        return len(payloads)

    def reset(self, key: str | None = None) -> list[str]:
        """Forget the baseline of one machine (or every one of this class): the next save starts afresh."""
        keys = [key] if key else self.keys()
        removed = []
        with self.lock():
            for k in keys:
                kd = self.key_dir(k)
                if not kd.is_dir():
                    continue
                trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=self.dir))
                os.rename(kd, trash / k)  # gone in one step, then deleted at leisure
                shutil.rmtree(trash, ignore_errors=True)
                removed.append(k)
        return removed

    # ------------------------------------------------------------------ reading

    def describe(self) -> tuple[list[dict], list[str]]:
        """(one row per machine: key, newest saved run, when, commit, GPUs, runs kept; one line per unreadable baseline)."""
        rows, problems = [], []
        for k in self.keys():
            kd = self.key_dir(k)
            saved = sorted((p for d in kd.iterdir() if d.is_dir() and not d.name.startswith(".")
                            for p in results.saved_files(d)), key=lambda p: (p.parent.name, p.name))
            row = {"class": self.runner_class, "key": k, "baseline": str(saved[-1]) if saved else None,
                   "saved runs": len(saved), "datetime": None, "commit": None, "gpus": None}
            if self.old_layout(k):
                row["note"] = "earlier layout (snapshots/): migrated by the next save or compare"
            if saved:
                try:
                    run = results.load_run(saved[-1])
                    row.update(datetime=run.datetime, commit=run.commit, gpus=(run.fingerprint or {}).get("gpus"))
                except ResultsError as exc:
                    problems.append(str(exc))
            rows.append(row)
        return rows, problems
