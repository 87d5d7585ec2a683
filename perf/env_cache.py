"""The cache of built environments: one folder per resolved set, built once, published whole.

Under the cache root (``default_cache_root``):

    <key>/                          a complete environment (bin/python, ...) and perf-env.json, what it holds
    <key>.lock                      locked (flock) while <key> is built: a second builder waits, then finds it
    <key>.partial-<pid>-<random>/   a build in progress, renamed to <key> only once complete and checked
    resolutions/<key>.json          what a list of requirements resolved to (``cached_resolution``)

An environment's key is a hash of its sorted ``name==version`` lines and the Python that runs it
(implementation, version, platform): the same contents, however asked for, are one folder. A build that
is killed leaves only a ``.partial-`` folder, which no lookup uses and the next build of that key
removes. Lock files stay: removing one while another process waits on it would let two builds in.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import secrets
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import UsageError
from .installers import Builder, Resolution, Resolver

MANIFEST = "perf-env.json"
CACHE_VARIABLE = "XDG_CACHE_HOME"


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/relu-step-perf/envs`` when that is an absolute path, else ``~/.cache/relu-step-perf/envs``."""
    xdg = os.environ.get(CACHE_VARIABLE, "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "relu-step-perf" / "envs"


def usable_cache_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` (default ``default_cache_root()``), created and checked writable; one UsageError line when not."""
    root = Path(root) if root is not None else default_cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as exc:
        raise UsageError(f"the environment cache {root} is not writable ({exc.strerror or exc}): "
                         f"set {CACHE_VARIABLE} to a folder that is") from None
    return root


def python_tag() -> str:
    """The Python every environment is built for: 'cpython-3.11.7-linux-x86_64'."""
    return f"{sys.implementation.name}-{platform.python_version()}-{sysconfig.get_platform()}"


def _digest(lines: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def environment_key(distributions: Mapping[str, str], python: str | None = None) -> str:
    """The folder name of the environment holding ``distributions`` (canonical name -> version)."""
    pins = sorted(f"{name}=={version}" for name, version in distributions.items())
    return _digest([*pins, python or python_tag()])


def resolution_key(requirements: Sequence[str], resolver_identity: str, python: str | None = None) -> str:
    """The key of a cached resolution: the requirements in any order, where they are looked up, the Python."""
    return _digest([*sorted(requirements), resolver_identity, python or python_tag()])


# --------------------------------------------------------------------------- resolutions


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name + ".", suffix=".tmp", delete=False) as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def _load_resolution(path: Path) -> Resolution | None:
    try:
        data = json.loads(path.read_text())
        return Resolution({str(k): str(v) for k, v in data["distributions"].items()},
                          {str(k): str(v) for k, v in data["sources"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def cached_resolution(root: Path, requirements: Sequence[str], resolver: Resolver, *,
                      refresh: bool = False) -> tuple[Resolution, bool]:
    """(what ``requirements`` resolve to, whether it came from the cache).

    A resolution is kept under ``root/resolutions``, keyed by ``resolution_key``, so that the same spec
    over the same pins gives the same environment from run to run (a bisection's probes stay put) and a
    second request runs no resolver. ``refresh`` resolves again and replaces it; so does a damaged file.
    """
    path = root / "resolutions" / f"{resolution_key(requirements, resolver.identity)}.json"
    cached = None if refresh else _load_resolution(path)
    if cached is not None:
        return cached, True
    resolution = resolver.resolve(requirements)
    record = {"requirements": sorted(requirements), "distributions": resolution.distributions, "sources": resolution.sources}
    _write_atomically(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return resolution, False


# --------------------------------------------------------------------------- environments


@contextmanager
def _locked(path: Path, log: Callable[[str], object]) -> Iterator[None]:
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process building the same environment (lock {path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock, a killed process's too


def _is_complete(entry: Path, resolution: Resolution) -> bool:
    if not entry.exists():
        return False
    try:
        held = json.loads((entry / MANIFEST).read_text())["distributions"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{entry} in the environment cache is not a complete environment: remove it") from None
    if held != resolution.distributions:
        raise UsageError(f"{entry} in the environment cache does not hold what its name says: remove it")
    return True


def retarget(build: Path, entry: Path) -> None:
    """Rewrite the build's scripts (``bin/``, not links) and ``pyvenv.cfg`` that name ``build`` to name ``entry``.

    Scripts' shebangs and activation files hold the folder they were installed in; the build is renamed.
    """
    old, new = str(build).encode(), str(entry).encode()
    candidates = [*(build / "bin").iterdir(), build / "pyvenv.cfg"] if (build / "bin").is_dir() else []
    for path in candidates:
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if old in data:
                path.write_bytes(data.replace(old, new))


def ensure_built(root: Path, resolution: Resolution, builder: Builder, *,
                 log: Callable[[str], object] = print) -> tuple[Path, bool]:
    """(the environment folder holding ``resolution``, whether it was built now).

    Found complete: returned as is. Else, under the key's lock: unfinished builds of the key removed,
    the environment built in a ``.partial-`` folder beside the entry, its scripts retargeted, its
    manifest written, and the folder renamed into place; on any failure the partial folder is removed.
    """
    entry = root / environment_key(resolution.distributions)
    if _is_complete(entry, resolution):
        return entry, False
    with _locked(root / f"{entry.name}.lock", log):
        if _is_complete(entry, resolution):
            return entry, False
        for stale in sorted(root.glob(f"{entry.name}.partial-*")):
            log(f"removing an unfinished build: {stale}")
            shutil.rmtree(stale, ignore_errors=True)
        build = root / f"{entry.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        count = len(resolution.distributions)
        log(f"building {count} distribution{'s' if count != 1 else ''} with {builder.name} into {entry}")
        started = time.monotonic()
        try:
            builder.build(build, resolution)
            retarget(build, entry)
            manifest = {"distributions": resolution.distributions, "python": python_tag(), "builder": builder.name}
            (build / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            os.rename(build, entry)
        finally:
            if build.exists():
                shutil.rmtree(build, ignore_errors=True)
        log(f"built {entry} in {time.monotonic() - started:.1f} s")
    return entry, True
