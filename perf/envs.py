"""Python environments to measure the project in, from specs: built once, cached by what they hold.

A SPEC (``parse_spec``) is one of

* requirement specifiers separated by spaces, ``"numpy==2.2.6"`` or ``"torch==2.14.1 numpy==2.3.5"``:
  an environment holding the project's dependencies pinned to the versions of the current
  environment (``torch 2.13.0+cpu`` stays exactly that), the packages the spec names replacing
  their pins or added to them (``pinned_requirements``);
* the path of an existing environment's Python interpreter (any spec holding a ``/``);
* ``current``: this environment (``sys.executable``).

``prepare`` turns a spec into an ``Environment``: the Python to run benchmarks with (the checkout as
working directory: the project itself is not installed), the versions it holds and a one-line
description. For requirements it resolves them to an exact set of distributions (pip's dry run,
the answer cached: ``perf.env_cache.cached_resolution``) and builds that set once, with uv where
there is one, else venv and pip (``perf.installers``), in a cache keyed by the set
(``perf.env_cache``). Interpreters are used as they are.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from . import env_cache
from .errors import UsageError
from .installers import Builder, PipResolver, Resolver, choose_builder, read_distributions, read_pip_config, venv_python

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest, a dependency of the project, brings tomli there
    import tomli as tomllib

CURRENT = "current"
_ACCEPTED = ("expected requirement specifiers separated by spaces (e.g. 'numpy==2.2.6'), "
             "the path of a Python interpreter, or 'current'")
_VERSION_CHECK = "import sys; print(sys.version_info[:2])"


class SpecKind(str, Enum):
    REQUIREMENTS = "requirements"  # build an environment
    INTERPRETER = "interpreter"  # an existing environment's Python
    CURRENT = "current"  # this environment


@dataclass(frozen=True)
class Spec:
    """A parsed SPEC: its text as given, and either requirements (one per package) or an interpreter."""

    text: str
    kind: SpecKind
    requirements: tuple[str, ...] = ()
    python: Path | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The canonical names of the packages the spec names, in its order."""
        return tuple(canonicalize_name(Requirement(r).name) for r in self.requirements)


def _bad(text: str, problem: str) -> UsageError:
    return UsageError(f"environment spec {text!r}: {problem}; {_ACCEPTED}")


def _check_interpreter(text: str) -> Path:
    path = Path(text).expanduser().absolute()  # not resolved: a virtual environment's python is a link out of it
    if not path.exists():
        raise _bad(text, "no such file")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise _bad(text, "not an executable file")
    try:
        proc = subprocess.run([str(path), "-c", _VERSION_CHECK], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _bad(text, f"does not run as Python ({exc})") from None
    if proc.returncode or not proc.stdout.startswith("("):
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit status {proc.returncode}"]
        raise _bad(text, f"does not run as Python ({lines[-1]})")
    return path


def parse_spec(text: str) -> Spec:
    """The ``Spec`` that SPEC ``text`` says; UsageError naming it and what is accepted when it says none.

    A spec holding a path separator (or starting with ``~``) is an interpreter: a file that is
    executable and runs ``-c "import sys; print(sys.version_info[:2])"``.
    """
    stripped = text.strip()
    if not stripped:
        raise _bad(text, "empty")
    if stripped == CURRENT:
        return Spec(text, SpecKind.CURRENT, python=Path(sys.executable))
    if "/" in stripped or os.sep in stripped or stripped.startswith("~"):
        return Spec(text, SpecKind.INTERPRETER, python=_check_interpreter(stripped))
    requirements, seen = [], set()
    for token in stripped.split():
        try:
            name = canonicalize_name(Requirement(token).name)
        except InvalidRequirement as exc:
            raise _bad(text, f"{token!r} is not a requirement specifier ({str(exc).splitlines()[0]})") from None
        if name in seen:
            raise _bad(text, f"names {name} twice")
        seen.add(name)
        requirements.append(token)
    return Spec(text, SpecKind.REQUIREMENTS, requirements=tuple(requirements))


# --------------------------------------------------------------------------- requirements


def project_dependencies(project_root: str | os.PathLike) -> list[Requirement]:
    """``[project] dependencies`` of ``project_root/pyproject.toml`` that apply on this platform (markers)."""
    path = Path(project_root) / "pyproject.toml"
    try:
        lines = tomllib.loads(path.read_text())["project"]["dependencies"]
        requirements = [Requirement(line) for line in lines]
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, InvalidRequirement) as exc:
        raise UsageError(f"{path}: cannot read [project] dependencies ({exc})") from None
    return [r for r in requirements if r.marker is None or r.marker.evaluate()]


def current_versions(names: Sequence[str]) -> dict[str, str]:
    """The versions of ``names`` installed in this environment; UsageError naming those that are not."""
    versions, missing = {}, []
    for name in names:
        try:
            versions[canonicalize_name(name)] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise UsageError(f"this environment lacks the project's dependencies {', '.join(missing)}: install the project first")
    return versions


def pinned_requirements(dependencies: Sequence[Requirement], installed: Mapping[str, str], spec: Spec) -> list[str]:
    """The requirements an environment for ``spec`` is resolved from.

    Each project dependency pinned with ``==`` to its version in ``installed`` (canonical name ->
    version; a local version such as ``+cpu`` kept), the spec's own specifier in place of the pin for
    each package it names, then the packages it names that are not dependencies, in its order.
    """
    named = dict(zip(spec.names, spec.requirements))
    lines = []
    for dep in dependencies:
        name = canonicalize_name(dep.name)
        extras = f"[{','.join(sorted(dep.extras))}]" if dep.extras else ""
        lines.append(named.pop(name, f"{dep.name}{extras}=={installed[name]}"))
    return lines + list(named.values())


# --------------------------------------------------------------------------- environments


class Source(str, Enum):
    BUILT = "built now"
    CACHE = "from cache"
    EXISTING = "existing"  # an interpreter given by path, or the current one


@dataclass(frozen=True)
class Environment:
    """A Python to measure the project in, and what it holds."""

    spec: Spec
    python: Path
    versions: dict[str, str]  # the spec's packages, then the project's dependencies: canonical name -> version
    distributions: dict[str, str]  # everything the environment holds (resolved, or read from the interpreter)
    source: Source

    @property
    def built_now(self) -> bool:
        return self.source is Source.BUILT

    @property
    def description(self) -> str:
        """One line for a report: 'numpy 2.2.6 (torch 2.13.0+cpu, scipy 1.17.1, ..., from cache)'."""
        if self.spec.kind is SpecKind.REQUIREMENTS:
            headline = ", ".join(f"{name} {self.versions.get(name, '(not installed here)')}" for name in self.spec.names)
        else:
            headline = "current environment" if self.spec.kind is SpecKind.CURRENT else str(self.python)
        others = [f"{name} {version}" for name, version in self.versions.items() if name not in self.spec.names]
        if self.source is not Source.EXISTING:
            others.append(self.source.value)
        return f"{headline} ({', '.join(others)})" if others else headline


def _existing(spec: Spec, dependency_names: Sequence[str]) -> Environment:
    distributions = read_distributions(spec.python)
    missing = [name for name in dependency_names if name not in distributions]
    if missing:
        raise UsageError(f"environment spec {spec.text!r}: {spec.python} lacks the project's dependencies "
                         f"{', '.join(missing)}")
    versions = {name: distributions[name] for name in dependency_names}
    return Environment(spec, spec.python, versions, distributions, Source.EXISTING)


def prepare(spec: Spec | str, *, project_root: str | os.PathLike, cache_root: str | os.PathLike | None = None,
            log: Callable[[str], object] = print, resolver: Resolver | None = None, builder: Builder | None = None,
            refresh: bool = False) -> Environment:
    """The environment ``spec`` asks for, built now or found in the cache (see the module's docstring).

    ``resolver`` and ``builder`` default to pip's dry run and uv (else venv + pip) under this
    machine's pip configuration; ``refresh`` resolves again rather than using a cached resolution.
    Every failure is one UsageError line naming the spec.
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    dependencies = project_dependencies(project_root)
    dependency_names = [canonicalize_name(dep.name) for dep in dependencies]
    if spec.kind is not SpecKind.REQUIREMENTS:
        return _existing(spec, dependency_names)
    requirements = pinned_requirements(dependencies, current_versions(dependency_names), spec)
    root = env_cache.usable_cache_root(cache_root)
    if resolver is None or builder is None:
        config = read_pip_config()
        resolver = resolver or PipResolver(config)
        builder = builder or choose_builder(config)
    try:
        resolution, cached = env_cache.cached_resolution(root, requirements, resolver, refresh=refresh)
        if not cached:
            log(f"resolved {spec.text!r}: {len(resolution.distributions)} to install, "
                f"{len(resolution.downloads())} of them to download (not on this machine's disk)")
        entry, built = env_cache.ensure_built(root, resolution, builder, log=log)
    except UsageError as exc:
        raise UsageError(f"environment spec {spec.text!r}: {exc}") from None
    names = dict.fromkeys([*spec.names, *dependency_names])
    versions = {name: resolution.distributions[name] for name in names if name in resolution.distributions}
    source = Source.BUILT if built else Source.CACHE
    return Environment(spec, venv_python(entry), versions, resolution.distributions, source)
