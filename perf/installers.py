"""pip and uv for ``perf.envs``: pip's configuration, resolution by pip's dry run, and the builders.

* ``read_pip_config``: the index URLs, find-links, constraints and certificate pip uses here
  (``pip config list``: its configuration files and ``PIP_*`` variables), so that uv, which reads
  none of them, looks where pip looks.
* ``PipResolver``: the exact set of distributions (``name==version``, dependencies included) that
  requirements resolve to, from ``pip install --dry-run --ignore-installed --report -``; pip's
  failure becomes one ``UsageError`` line holding its most telling line.
* ``UvBuilder`` (uv on PATH or importable) and ``PipBuilder`` (``python -m venv`` + pip): an
  environment holding exactly a resolved set, installed with ``--no-deps`` so that nothing moves;
  ``choose_builder`` picks one. Both check what they installed against the resolved set.
* ``read_distributions``: every distribution an interpreter holds, read by that interpreter.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from packaging.utils import canonicalize_name

from .errors import UsageError

Runner = Callable[..., subprocess.CompletedProcess]

# Lines of pip's stderr that never say what went wrong (noise around the reason).
_BOILERPLATE = ("ResolutionImpossible: for help visit", "Ignored the following versions")
# The sections ``pip install`` reads, weakest first; ``:env:`` holds the PIP_* variables.
_SECTION_RANK = {"global": 0, "install": 1, ":env:": 2}
_TRUE = {"1", "true", "yes", "on"}
_LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, json\n"
    "found = {}\n"
    "for d in m.distributions():\n"
    "    found.setdefault(d.metadata['Name'], d.version)\n"
    "print(json.dumps(found))\n"
)


# --------------------------------------------------------------------------- pip's configuration


@dataclass(frozen=True)
class PipConfig:
    """Where pip looks for distributions here, and what caps them (pip's own option names)."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    constraints: tuple[str, ...] = ()
    cert: str | None = None

    def fingerprint(self) -> str:
        """Everything here that can change what a resolution gives, the constraint files' text included."""
        texts = [Path(c).read_text(errors="replace") if Path(c).is_file() else "" for c in self.constraints]
        return json.dumps([self.index_url, self.extra_index_urls, self.find_links, self.no_index, self.constraints, texts])


def parse_pip_config(listing: str) -> PipConfig:
    """The ``PipConfig`` of a ``pip config list`` output (lines ``section.key='value'``).

    Precedence as ``pip install`` applies it: ``PIP_*`` variables over ``[install]`` over ``[global]``.
    """
    ranked: dict[str, tuple[int, str]] = {}
    for line in listing.splitlines():
        match = re.fullmatch(r"\s*(:env:|[\w-]+)\.([\w-]+)=(.*?)\s*", line)
        if not match or match.group(1) not in _SECTION_RANK:
            continue
        section, key, quoted = match.groups()
        try:
            value = str(ast.literal_eval(quoted))
        except (ValueError, SyntaxError):
            value = quoted
        key, rank = key.replace("_", "-"), _SECTION_RANK[section]
        if key not in ranked or ranked[key][0] <= rank:
            ranked[key] = (rank, value)
    values = {key: value for key, (_, value) in ranked.items()}
    return PipConfig(index_url=values.get("index-url"),
                     extra_index_urls=tuple(values.get("extra-index-url", "").split()),
                     find_links=tuple(values.get("find-links", "").split()),
                     no_index=values.get("no-index", "").strip().lower() in _TRUE,
                     constraints=tuple(values.get("constraint", "").split()),
                     cert=values.get("cert"))


def read_pip_config(python: str | os.PathLike = sys.executable, run: Runner = subprocess.run) -> PipConfig:
    """pip's configuration as ``python -m pip config list`` reports it; UsageError when pip cannot say."""
    proc = run([str(python), "-m", "pip", "config", "list"], capture_output=True, text=True)
    if proc.returncode:
        raise UsageError(f"pip config list failed: {telling_line(proc.stderr, proc.returncode)}")
    return parse_pip_config(proc.stdout)


# --------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class Resolution:
    """What requirements resolve to: every distribution (canonical name -> version) and where pip finds it."""

    distributions: dict[str, str]
    sources: dict[str, str] = field(default_factory=dict)  # canonical name -> URL (file: when on disk)

    def pins(self) -> list[str]:
        """``name==version`` for every distribution, sorted: what a builder installs, with --no-deps."""
        return [f"{name}=={version}" for name, version in sorted(self.distributions.items())]

    def downloads(self) -> dict[str, str]:
        """The sources that are not on this machine's disk (not ``file:`` URLs)."""
        return {name: url for name, url in self.sources.items() if not url.startswith("file:")}


def telling_line(stderr: str, returncode: int) -> str:
    """The line of a failed pip or uv run that says what went wrong, without its ``ERROR:`` prefix.

    The last error line that is not boilerplate, else the last line, else the exit status.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("ERROR:", "error:"))]
    telling = [line for line in errors if not any(noise in line for noise in _BOILERPLATE)]
    chosen = (telling or errors or lines or [f"exit status {returncode}"])[-1]
    return re.sub(r"^(ERROR|error):\s*", "", chosen)


def parse_pip_report(report: Mapping) -> Resolution:
    """The ``Resolution`` in a pip installation report (``--report``, format version 1)."""
    try:
        installs = report["install"]
        distributions = {canonicalize_name(item["metadata"]["name"]): str(item["metadata"]["version"]) for item in installs}
        sources = {canonicalize_name(item["metadata"]["name"]): str(item["download_info"]["url"]) for item in installs}
    except (KeyError, TypeError) as exc:
        raise UsageError(f"pip's installation report lacks a field the resolution needs: {exc}") from None
    return Resolution(distributions, sources)


@dataclass(frozen=True)
class PipResolver:
    """Resolves requirements with pip's dry run under ``python`` (the environments' Python), reading pip's configuration."""

    config: PipConfig
    python: str = sys.executable
    run: Runner = subprocess.run

    @property
    def identity(self) -> str:
        """What, besides the requirements, decides the answer: a part of the resolution cache's key."""
        return "pip:" + self.config.fingerprint()

    def command(self, requirements: Sequence[str]) -> list[str]:
        return [self.python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-input", "--quiet",
                "--report", "-", *requirements]

    def resolve(self, requirements: Sequence[str]) -> Resolution:
        """The exact set ``requirements`` resolve to; UsageError with pip's telling line when they do not."""
        proc = self.run(self.command(requirements), capture_output=True, text=True)
        if proc.returncode:
            raise UsageError(telling_line(proc.stderr, proc.returncode))
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise UsageError("pip's dry run printed no installation report (pip >= 22.2 is needed)") from None
        return parse_pip_report(report)


# --------------------------------------------------------------------------- building


def venv_python(env: Path) -> Path:
    """The interpreter of the virtual environment at ``env`` (POSIX layout)."""
    return env / "bin" / "python"


def read_distributions(python: str | os.PathLike, run: Runner = subprocess.run) -> dict[str, str]:
    """Every distribution ``python`` holds (canonical name -> version), read by it in isolated mode."""
    proc = run([str(python), "-I", "-c", _LIST_DISTRIBUTIONS], capture_output=True, text=True)
    if proc.returncode:
        raise UsageError(f"{python} could not list its distributions: {telling_line(proc.stderr, proc.returncode)}")
    return {canonicalize_name(name): version for name, version in json.loads(proc.stdout).items()}


def differences(expected: Mapping[str, str], found: Mapping[str, str]) -> list[str]:
    """What ``found`` holds that ``expected`` does not and the reverse: 'numpy 2.2.7 instead of 2.2.6', ..."""
    lines = []
    for name in sorted(expected.keys() | found.keys()):
        want, got = expected.get(name), found.get(name)
        if want is None:
            lines.append(f"{name} {got} not asked for")
        elif got is None:
            lines.append(f"{name} {want} missing")
        elif want != got:
            lines.append(f"{name} {got} instead of {want}")
    return lines


def _run_checked(label: str, command: Sequence[str], run: Runner, env: Mapping[str, str] | None = None) -> None:
    proc = run(list(command), capture_output=True, text=True, env=None if env is None else dict(env))
    if proc.returncode:
        raise UsageError(f"{label} failed: {telling_line(proc.stderr, proc.returncode)}")


def _check_holds_exactly(env: Path, expected: Mapping[str, str], run: Runner) -> None:
    extra = differences(expected, read_distributions(venv_python(env), run))
    if extra:
        raise UsageError(f"the environment built holds other distributions than resolved: {', '.join(extra)}")


@dataclass(frozen=True)
class UvBuilder:
    """Builds with uv: ``uv venv``, then ``uv pip install --no-deps`` from where pip looks (pip's configuration)."""

    uv: str
    config: PipConfig
    python: str = sys.executable
    run: Runner = subprocess.run
    name: str = "uv"

    def index_args(self) -> list[str]:
        """pip's configuration as uv options; uv picks from every index at once, as pip does."""
        args = ["--index-strategy", "unsafe-best-match"]
        if self.config.no_index:
            args.append("--no-index")
        else:
            if self.config.index_url:
                args += ["--index-url", self.config.index_url]
            for url in self.config.extra_index_urls:
                args += ["--extra-index-url", url]
        for link in self.config.find_links:
            args += ["--find-links", link]
        return args

    def commands(self, env: Path, pins: Sequence[str]) -> list[list[str]]:
        return [[self.uv, "venv", "--quiet", "--python", self.python, str(env)],
                [self.uv, "pip", "install", "--quiet", "--python", str(venv_python(env)), "--no-deps", "--compile-bytecode",
                 *self.index_args(), *pins]]

    def environ(self) -> dict[str, str]:
        """This process's environment, with pip's certificate bundle given to uv (``SSL_CERT_FILE``) when pip has one."""
        return {**os.environ, "SSL_CERT_FILE": self.config.cert} if self.config.cert else dict(os.environ)

    def build(self, env: Path, resolution: Resolution) -> None:
        """An environment at ``env`` (which must not exist) holding exactly ``resolution``."""
        create, install = self.commands(env, resolution.pins())
        _run_checked("uv venv", create, self.run, self.environ())
        _run_checked("uv pip install", install, self.run, self.environ())
        _check_holds_exactly(env, resolution.distributions, self.run)


@dataclass(frozen=True)
class PipBuilder:
    """Builds with ``python -m venv --without-pip``, then this interpreter's pip installing into it (``--python``)."""

    python: str = sys.executable
    run: Runner = subprocess.run
    name: str = "pip"

    def commands(self, env: Path, pins: Sequence[str]) -> list[list[str]]:
        return [[self.python, "-m", "venv", "--without-pip", str(env)],
                [self.python, "-m", "pip", "--python", str(venv_python(env)), "install", "--quiet", "--no-input",
                 "--no-deps", *pins]]

    def build(self, env: Path, resolution: Resolution) -> None:
        """An environment at ``env`` (which must not exist) holding exactly ``resolution``."""
        create, install = self.commands(env, resolution.pins())
        _run_checked("python -m venv", create, self.run)
        _run_checked("pip install", install, self.run)
        _check_holds_exactly(env, resolution.distributions, self.run)


def find_uv() -> str | None:
    """uv's executable: on PATH, else the one the ``uv`` package installed here; None when neither."""
    on_path = shutil.which("uv")
    if on_path:
        return on_path
    try:
        import uv
    except ImportError:
        return None
    try:
        return uv.find_uv_bin()
    except FileNotFoundError:
        return None


def choose_builder(config: PipConfig, python: str = sys.executable) -> UvBuilder | PipBuilder:
    """uv where it is found (``find_uv``), else ``python -m venv`` + pip."""
    uv = find_uv()
    return UvBuilder(uv, config, python) if uv else PipBuilder(python)


class Resolver(Protocol):
    """Resolves requirements to the exact set of distributions an environment will hold."""

    @property
    def identity(self) -> str:
        """What, besides the requirements, decides the answer (e.g. the index configuration)."""

    def resolve(self, requirements: Sequence[str]) -> Resolution:
        """The exact set; UsageError with the reason (one line) when there is none."""


class Builder(Protocol):
    """Builds an environment holding exactly a resolved set."""

    name: str

    def build(self, env: Path, resolution: Resolution) -> None:
        """An environment at ``env`` (which must not exist); UsageError with the reason when it cannot."""
