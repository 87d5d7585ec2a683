"""Where a runner's baselines live, and how one is replaced without ever being half-written.

Layout, on the runner (ROOT: --root, else $RUNNER_BASELINE_DIR, else ~/.relu-perf-baselines)::

    ROOT/<class>/.lock                      one writer per runner class at a time
    ROOT/<class>/<key>/fingerprint.json     the machine the baselines below were measured on
    ROOT/<class>/<key>/current              the name of the snapshot in force (one line)
    ROOT/<class>/<key>/snapshots/<name>/    baseline.json (pytest-benchmark JSON, raw samples), meta.json;
                                            the last KEEP are kept: the plugin's run-to-run drift reads them
    ROOT/<class>/<key>/snapshots/.partial-* a save in progress, or one that was interrupted

<class> is the runner's label set, sorted and joined ("gpu-linux-self-hosted"); <key> names the
machine fingerprint (GPU, driver, CUDA, torch, CPU, Python, numpy) and ends in its hash, so a
driver upgrade starts a new baseline instead of being compared with the old one.

A save writes a new snapshot under a ``.partial-`` name, renames it into place when complete,
then replaces ``current`` atomically (write a temporary file, ``os.replace``). Until that last
step the previous baseline is the one in force; an interrupted save leaves only a ``.partial-``
directory, removed by the next save. Snapshot directories are never modified once in place.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT_VARIABLE = "RUNNER_BASELINE_DIR"
DEFAULT_ROOT = "~/.relu-perf-baselines"
BASELINE_FILE = "baseline.json"
META_FILE = "meta.json"
POINTER = "current"
PARTIAL = ".partial-"
KEEP = 5  # snapshots kept per fingerprint, the one in force included (the plugin's perf_history reads 5)
# Fingerprint fields that depend on which libraries a process has loaded so far: the pytest
# plugin compares them exactly; they do not name the machine.
VOLATILE = ("threads", "blas")


class BaselineError(Exception):
    """Bad store input or state: one line."""


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
                raise BaselineError(f"runner class {runner_class!r}: not a JSON list of labels ({exc})") from None
        else:
            items = text.split(",")
    else:
        items = list(runner_class)
    found = sorted({str(i).strip().lower() for i in items if str(i).strip()})
    if not found:
        raise BaselineError(f"runner class {runner_class!r}: no labels")
    return found


def _safe(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "_", text.lower()).strip("._-") or "x"


def class_slug(runner_class: str | Sequence[str]) -> str:
    """A directory and artifact name for a runner class: its labels, sorted, joined by '-'."""
    return "-".join(_safe(label) for label in labels(runner_class))


def machine_fields(fingerprint: Mapping) -> dict:
    """The fingerprint without the per-process fields: what names the machine."""
    return {k: fingerprint[k] for k in sorted(fingerprint) if k not in VOLATILE}


def fingerprint_key(fingerprint: Mapping) -> str:
    """'<first GPU, else CPU>-<12 hex digits of the hash of the machine fields>'."""
    fields = machine_fields(fingerprint)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]
    gpus = fields.get("gpus") or []
    name = str(gpus[0]) if gpus else str(fields.get("cpu") or "machine")
    return f"{_safe(name)[:40].strip('._-') or 'machine'}-{digest}"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: readers see the old content or the new, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def copy_file(src: Path, dest: Path) -> None:
    shutil.copyfile(src, dest)
    with open(dest, "rb+") as fh:
        os.fsync(fh.fileno())


@dataclass(frozen=True)
class Snapshot:
    key: str
    name: str
    path: Path

    @property
    def baseline(self) -> Path:
        return self.path / BASELINE_FILE

    def meta(self) -> dict:
        try:
            return json.loads((self.path / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}


class Store:
    """The baselines of one runner class under one root."""

    def __init__(self, root_dir: str | os.PathLike, runner_class: str | Sequence[str]) -> None:
        self.root = Path(root_dir)
        self.runner_class = class_slug(runner_class)
        self.dir = self.root / self.runner_class

    def key_dir(self, key: str) -> Path:
        if not key or _safe(key) != key.lower() or key.startswith("."):
            raise BaselineError(f"invalid fingerprint key {key!r}")
        return self.dir / key

    def keys(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name for p in self.dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def current(self, key: str) -> Snapshot | None:
        """The snapshot in force for this fingerprint, or None (never saved, or reset)."""
        kd = self.key_dir(key)
        try:
            name = (kd / POINTER).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        snap = Snapshot(key, name, kd / "snapshots" / name)
        return snap if name and not name.startswith(".") and snap.baseline.is_file() else None

    def history(self, key: str) -> list[Snapshot]:
        """The complete snapshots of this fingerprint up to the one in force, oldest first (run-to-run drift)."""
        snap = self.current(key)
        if snap is None:
            return []
        done = sorted(p.name for p in snap.path.parent.iterdir() if p.is_dir() and not p.name.startswith("."))
        return [Snapshot(key, n, snap.path.parent / n) for n in done
                if n <= snap.name and (snap.path.parent / n / BASELINE_FILE).is_file()]

    def fingerprint(self, key: str) -> dict | None:
        try:
            return json.loads((self.key_dir(key) / "fingerprint.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

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
                    if time.monotonic() > deadline:
                        raise BaselineError(f"another save holds {self.dir / '.lock'} for over {timeout:.0f} s") from None
                    time.sleep(1.0)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def save(self, key: str, fingerprint: Mapping, baseline_json: Path, meta: Mapping, extra: Sequence[Path] = ()) -> Snapshot:
        """Put a complete run in force as this fingerprint's baseline; the previous one stays until the end."""
        kd = self.key_dir(key)
        with self.lock():
            snapshots = kd / "snapshots"
            snapshots.mkdir(parents=True, exist_ok=True)
            self._remove_partials(snapshots)
            fp_file = kd / "fingerprint.json"
            if not fp_file.exists():
                write_atomic(fp_file, json.dumps(dict(fingerprint), indent=2, sort_keys=True, default=str) + "\n")
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            commit = _safe(str(meta.get("commit") or "local"))[:12]
            partial = Path(tempfile.mkdtemp(prefix=PARTIAL, dir=snapshots))
            name = f"{stamp}-{commit}-{partial.name[len(PARTIAL):]}"
            try:
                copy_file(baseline_json, partial / BASELINE_FILE)
                for path in extra:
                    copy_file(path, partial / Path(path).name)
                (partial / META_FILE).write_text(json.dumps({**meta, "snapshot": name}, indent=2, default=str) + "\n",
                                                 encoding="utf-8")
                _fsync_dir(partial)
                os.rename(partial, snapshots / name)
                _fsync_dir(snapshots)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            # The one step that changes which baseline is in force.
            write_atomic(kd / POINTER, name + "\n")
            self._prune(kd, keep=KEEP)
        return Snapshot(key, name, snapshots / name)

    def reset(self, key: str | None = None) -> list[str]:
        """Forget the baseline of one fingerprint (or every one of this class): the next save starts afresh."""
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

    def describe(self) -> list[dict]:
        """One row per fingerprint: key, snapshot in force, when and from which commit, snapshots kept."""
        rows = []
        for k in self.keys():
            snap = self.current(k)
            meta = snap.meta() if snap else {}
            kept = [p.name for p in (self.dir / k / "snapshots").glob("*") if not p.name.startswith(".")]
            rows.append({"class": self.runner_class, "key": k, "current": snap.name if snap else None,
                         "saved": meta.get("saved"), "commit": meta.get("commit"),
                         "gpus": (self.fingerprint(k) or {}).get("gpus"),
                         "path": str(snap.path if snap else self.dir / k), "snapshots": len(kept)})
        return rows

    @staticmethod
    def _remove_partials(snapshots: Path) -> None:
        for p in snapshots.glob(PARTIAL + "*"):
            shutil.rmtree(p, ignore_errors=True)

    @staticmethod
    def _prune(kd: Path, keep: int) -> None:
        try:
            current = (kd / POINTER).read_text(encoding="utf-8").strip()
        except OSError:
            return
        done = sorted((p for p in (kd / "snapshots").iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.name, reverse=True)
        old = [p for p in done if p.name != current][max(keep - 1, 0):]
        for p in old:
            shutil.rmtree(p, ignore_errors=True)
