"""Counting instead of timing: instructions, branches, cache misses and a cycle estimate per call,
measured under valgrind's callgrind, the CPU metric that does not move with the machine's load.

Three parts, used by a parent process and by the child it runs under valgrind:

- the launcher (parent): ``valgrind_problem`` says whether valgrind is here, ``command`` and
  ``environment`` make the child's command line and environment (the options that make counts
  repeatable are in ``Launch``; why each is there: docs/results/counts.md);
- in-process control (child): ``count`` warms a call up, then counts ``calls`` calls with
  collection switched on around the calls only, and dumps them under a name; ``under_callgrind``
  says whether this process can count. Callgrind's client requests come from a tiny C shim
  (perf/_valgrind_shim.c) compiled at first use with the system compiler and cached outside
  the repository, so a numpy-only child never imports torch;
- the reader: ``parse_dump``/``read_dumps`` turn callgrind's output files into ``Counters``.

Every failure is a ``CallgrindError`` with a one-line message.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import machine
from .errors import CallgrindError

ENV_DIR = "RELU_STEP_PERF_CALLGRIND_DIR"  # set by the launcher: where the child's dumps go
OUT_PREFIX = "callgrind.out."             # dump files: OUT_PREFIX + PID [+ "." + N]
INSTALL_HINT = "install it with `apt-get install valgrind` on Debian/Ubuntu (`dnf install valgrind` on Fedora)"
EVENTS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw", "Bc", "Bcm", "Bi", "Bim")
MAX_NAME = 1000      # characters of a dump's name kept (callgrind writes it into one header line)
DEFAULT_CALLS = 10
DEFAULT_WARMUP = 10        # uninstrumented calls first (Python specialises bytecode after a few calls)
DEFAULT_CACHE_WARMUP = 2   # then instrumented calls with collection off (fills the simulated caches)
PRIME_REGIONS = 5000       # runs of the counted region's code before a process's first count




# --------------------------------------------------------------------------- counters


@dataclass(frozen=True)
class Counters:
    """Callgrind's events (its names, lower-cased), totals or per call.

    ir instructions; dr/dw data reads/writes; i1mr/d1mr/d1mw first-level misses (instruction
    read, data read, data write); ilmr/dlmr/dlmw last-level misses; bc/bcm conditional branches
    and their mispredictions; bi/bim indirect branches and theirs. Events a run did not collect
    are 0.
    """

    ir: float = 0
    dr: float = 0
    dw: float = 0
    i1mr: float = 0
    d1mr: float = 0
    d1mw: float = 0
    ilmr: float = 0
    dlmr: float = 0
    dlmw: float = 0
    bc: float = 0
    bcm: float = 0
    bi: float = 0
    bim: float = 0

    @classmethod
    def from_events(cls, events: Sequence[str], values: Sequence[float]) -> Counters:
        """From callgrind's ``events:`` names and a cost line (missing trailing values are 0)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{e.lower(): v for e, v in zip(events, values) if e.lower() in known})

    @property
    def instructions(self) -> float:
        return self.ir

    @property
    def branches(self) -> float:
        return self.bc + self.bi

    @property
    def mispredicts(self) -> float:
        return self.bcm + self.bim

    @property
    def l1_misses(self) -> float:
        return self.i1mr + self.d1mr + self.d1mw

    @property
    def ll_misses(self) -> float:
        return self.ilmr + self.dlmr + self.dlmw

    @property
    def cycles(self) -> float:
        """KCachegrind's cycle estimate: Ir + 10 Bm + 10 L1m + 100 LLm.

        KCachegrind (libviews/globalconfig.cpp, knownFormula "CEst") defines
        ``Ir + 10 Bm + 10 L1m + 20 Ge + 100 L2m + 100 LLm``; callgrind here collects no
        global bus events (Ge) and simulates no separate L2 (L2m), so both terms are 0.
        An LL miss is also an L1 miss: it costs 110 in all.
        """
        return self.ir + 10 * self.mispredicts + 10 * self.l1_misses + 100 * self.ll_misses

    def __add__(self, other: Counters) -> Counters:
        return Counters(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(a - b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def scaled(self, factor: float) -> Counters:
        return Counters(*(a * factor for a in dataclasses.astuple(self)))

    def clamped(self) -> Counters:
        """Negative events set to 0 (after subtracting an overhead that missed the cache more)."""
        return Counters(*(max(a, 0) for a in dataclasses.astuple(self)))

    def summary(self) -> dict[str, float]:
        """The derived figures a result records: instructions, branches, misses, estimated cycles."""
        return {
            "instructions": self.instructions,
            "branches": self.branches,
            "mispredicts": self.mispredicts,
            "l1_misses": self.l1_misses,
            "ll_misses": self.ll_misses,
            "cycles": self.cycles,
        }


# --------------------------------------------------------------------------- output files


@dataclass(frozen=True)
class Dump:
    """One callgrind output file: its totals and what triggered it."""

    path: str
    pid: int | None
    part: int | None          # the dump's number in its process (1, 2, ...)
    trigger: str              # e.g. "Client Request: NAME", "Program termination"
    events: tuple[str, ...]
    totals: Counters          # the 'totals:' line: the sum of the file's cost lines
    summary: Counters         # the header's 'summary:' (can differ slightly where collection was toggled)
    caches: tuple[str, ...]   # the simulated caches, as callgrind describes them

    @property
    def name(self) -> str | None:
        """The name given to CALLGRIND_DUMP_STATS_AT, or None for any other trigger."""
        prefix = "Client Request:"
        if not self.trigger.startswith(prefix):
            return None
        return self.trigger[len(prefix):].removeprefix(" ")


def _cost_line(path: str, key: str, text: str, width: int) -> list[int]:
    fields = text.split()
    if len(fields) > width:
        raise CallgrindError(f"{path}: damaged callgrind output: '{key}:' has {len(fields)} values for {width} events")
    try:
        values = [int(f) for f in fields]
    except ValueError:
        raise CallgrindError(f"{path}: damaged callgrind output: '{key}:' holds a value that is not an integer") from None
    return values + [0] * (width - len(values))  # callgrind omits trailing zeros


def parse_dump(path: str | os.PathLike) -> Dump:
    """Read one callgrind output file's header and totals; a damaged file is a one-line CallgrindError.

    The totals are the ``totals:`` line at the end (the sum of the cost lines, what
    callgrind_annotate and KCachegrind show), or the header's ``summary:`` where a file has no
    ``totals:``. The two differ by a few dozen instructions per toggle where collection was
    switched on and off several times between dumps (seen with valgrind 3.19).
    """
    name = os.fspath(path)
    try:
        head, tail = _read_ends(name)
    except OSError as exc:
        raise CallgrindError(f"{name}: cannot read callgrind output: {exc.strerror or exc}") from None
    if not head or not head[0].startswith(("# callgrind format", "version:")):
        raise CallgrindError(f"{name}: not a callgrind output file (no '# callgrind format' header)")
    header: dict[str, str] = {}
    caches: list[str] = []
    trigger = ""
    for line in head:
        key, sep, value = line.partition(":")
        if not sep or " " in key:
            continue
        value = value.strip() if key != "desc" else value.lstrip()
        if key == "desc":
            what, _, detail = value.partition(":")
            if what == "Trigger":
                trigger = detail.strip()
            elif what.endswith("cache"):
                caches.append(value)
        elif key not in header:
            header[key] = value
    totals_text = None
    for line in reversed(tail):
        if line.startswith("totals:"):
            totals_text = line[len("totals:"):].strip()
            break
    if "events" not in header:
        raise CallgrindError(f"{name}: damaged callgrind output: no 'events:' line")
    events = tuple(header["events"].split())
    if not events:
        raise CallgrindError(f"{name}: damaged callgrind output: an empty 'events:' line")
    if "summary" not in header and totals_text is None:
        raise CallgrindError(f"{name}: damaged callgrind output: neither 'summary:' nor 'totals:'")
    summary = _cost_line(name, "summary", header.get("summary", totals_text or ""), len(events))
    totals = summary if totals_text is None else _cost_line(name, "totals", totals_text, len(events))

    def number(key: str) -> int | None:
        try:
            return int(header[key])
        except (KeyError, ValueError):
            return None

    return Dump(name, number("pid"), number("part"), trigger, events, Counters.from_events(events, totals),
                Counters.from_events(events, summary), tuple(caches))


_BODY = (b"ob=", b"fl=", b"fi=", b"fe=", b"fn=", b"cob=", b"cfi=", b"cfl=", b"cfn=", b"calls=", b"jump=", b"jcnd=")
_HEADER_LINES = 1000
_LINE_BYTES = 8192
_TAIL_BYTES = 4096


def _read_ends(name: str) -> tuple[list[str], list[str]]:
    """The header lines (up to the first cost line) and the last few KiB of a callgrind file.

    Reads in bounded pieces, never the whole body: the process that counts reads its dumps
    between benchmarks, and allocations sized by a dump's content would shift the heap
    layout, and with it the counts, of the benchmarks after it.
    """
    head: list[bytes] = []
    with open(name, "rb") as fh:
        for _ in range(_HEADER_LINES):
            raw = fh.readline(_LINE_BYTES)
            if not raw or raw.startswith(_BODY) or raw[:1] in b"0123456789+-*":
                break
            head.append(raw)
        size = os.fstat(fh.fileno()).st_size
        fh.seek(max(0, size - _TAIL_BYTES))
        tail = fh.read(_TAIL_BYTES)
    return [_text(b) for b in head], [_text(b) for b in tail.splitlines()]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").rstrip("\r\n")


_DUMP_FILE = re.compile(re.escape(OUT_PREFIX) + r"(\d+)(?:\.(\d+))?")


def dump_files(directory: str | os.PathLike, pid: int | None = None) -> list[Path]:
    """Callgrind's output files in ``directory`` (of process ``pid`` only, if given), in dump order.

    The last dump of a process, at its end, has no number and sorts last.
    """
    found = []
    for entry in Path(directory).iterdir():
        m = _DUMP_FILE.fullmatch(entry.name)
        if m and (pid is None or int(m.group(1)) == pid):
            found.append((int(m.group(1)), int(m.group(2)) if m.group(2) else 1 << 62, entry))
    return [entry for *_, entry in sorted(found)]


def read_dumps(directory: str | os.PathLike, pid: int | None = None) -> list[Dump]:
    """Every dump in ``directory`` (see ``dump_files``), parsed."""
    return [parse_dump(p) for p in dump_files(directory, pid)]


# --------------------------------------------------------------------------- the launcher


def valgrind_problem() -> str | None:
    """None when valgrind can be run here, else the one-line reason with the install hint."""
    exe = shutil.which("valgrind")
    if exe is None:
        return f"--perf-metric instructions counts under valgrind, which is not installed: {INSTALL_HINT}"
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"valgrind at {exe} does not run ({exc}); reinstall it: {INSTALL_HINT}"
    if out.returncode != 0:
        return f"valgrind at {exe} does not run (exit {out.returncode}); reinstall it: {INSTALL_HINT}"
    return None


@dataclass(frozen=True)
class Launch:
    """How the child runs under callgrind. The defaults are what docs/results/counts.md found repeatable.

    The caches are fixed (valgrind otherwise copies the host's, so counts would follow the
    machine): 32 KiB 8-way L1s and an 8 MiB 16-way LL, 64-byte lines, as pythonspeed.com's
    "consistent benchmarking in CI" and CPython's benchmark tooling use. ``no_aslr`` runs valgrind
    under ``setarch -R``; ``hash_seed`` fixes PYTHONHASHSEED (None: leave it random);
    ``clean_env`` passes the child only the variables ``environment`` keeps; ``cwd`` is the
    child's working directory (torch's import keeps ``os.getcwd()``, so the caller's directory
    moved counts by up to 2%), None to inherit the caller's.
    """

    cache_sim: bool = True
    branch_sim: bool = True
    no_aslr: bool = True
    hash_seed: str | None = "0"
    clean_env: bool = True
    cwd: str | None = "/"     # the child's working directory: fixed, whatever the caller's
    i1: str = "32768,8,64"
    d1: str = "32768,8,64"
    ll: str = "8388608,16,64"
    extra: tuple[str, ...] = ()   # more valgrind options, verbatim


def command(argv: Sequence[str], out_dir: str | os.PathLike, launch: Launch = Launch()) -> list[str]:
    """The command line that runs ``argv`` under callgrind with nothing counted until ``count`` asks.

    Instrumentation and collection start off (``--instr-atstart=no``: start-up runs at valgrind's
    light speed, ~4x faster for ``import torch``); the child switches them on around its calls.
    """
    exe = shutil.which("valgrind") or "valgrind"
    yes = {True: "yes", False: "no"}
    line = [
        exe, "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
        f"--cache-sim={yes[launch.cache_sim]}", f"--branch-sim={yes[launch.branch_sim]}",
        f"--callgrind-out-file={Path(out_dir, OUT_PREFIX)}%p",
        "--dump-line=no",  # totals are all we read: smaller dumps, written faster
    ]
    if launch.cache_sim:
        line += [f"--I1={launch.i1}", f"--D1={launch.d1}", f"--LL={launch.ll}"]
    line += [*launch.extra, *argv]
    if launch.no_aslr and shutil.which("setarch"):
        line = ["setarch", platform.machine(), "-R", *line]
    return line


# What a clean environment keeps of the caller's: what finds the interpreter, its packages and a
# compiler. Everything else (CI run ids, branch names, terminal and session variables) changes
# from run to run, and the environment's size moves the child's memory layout and its counts.
KEEP_ENV = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
            "XDG_CACHE_HOME", "CC")


def environment(out_dir: str | os.PathLike, base: Mapping[str, str] | None = None, launch: Launch = Launch(),
                keep: Iterable[str] = ()) -> dict[str, str]:
    """The child's environment: the dump directory, one thread per pool (spinning worker threads
    would be counted), the fixed hash seed, and of ``base`` (default os.environ) only the
    variables in KEEP_ENV and ``keep`` when ``launch.clean_env`` (else all of it)."""
    base = os.environ if base is None else base
    names = set(KEEP_ENV) | set(keep)
    env = {k: v for k, v in base.items() if k in names} if launch.clean_env else dict(base)
    env.update(machine.thread_env(1))
    env[ENV_DIR] = os.fspath(out_dir)
    if launch.hash_seed is not None:
        env["PYTHONHASHSEED"] = launch.hash_seed
    else:
        env.pop("PYTHONHASHSEED", None)
    return env


@dataclass(frozen=True)
class Child:
    """How to start the child: ``subprocess.run(c.argv, env=c.env, cwd=c.cwd)``."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None


def child(argv: Sequence[str], out_dir: str | os.PathLike, launch: Launch = Launch(),
          base: Mapping[str, str] | None = None, keep: Iterable[str] = ()) -> Child:
    """``command``, ``environment`` and the working directory of a child that counts, together.

    ``argv`` must not depend on the caller's working directory (absolute paths), since the child
    runs in ``launch.cwd``.
    """
    return Child(command(argv, out_dir, launch), environment(out_dir, base, launch, keep), launch.cwd)


# --------------------------------------------------------------------------- client requests (in the child)

SHIM_SOURCE = Path(__file__).with_name("_valgrind_shim.c")


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root, "relu-step-perf")


def build_shim(cache_dir: str | os.PathLike | None = None) -> Path:
    """The compiled client-request shim, built with the system C compiler on first use.

    Cached as ``valgrind-shim-HASH.so`` (HASH of the source), outside the repository; written to
    a temporary name and renamed, so that concurrent builders never load a half-written file.
    """
    try:
        source = SHIM_SOURCE.read_bytes()
    except OSError as exc:
        raise CallgrindError(f"cannot read {SHIM_SOURCE}: {exc.strerror or exc}") from None
    directory = Path(cache_dir) if cache_dir is not None else _cache_dir()
    target = directory / f"valgrind-shim-{hashlib.sha256(source).hexdigest()[:16]}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise CallgrindError("counting needs a C compiler to build its valgrind client-request shim: "
                             "install one (`apt-get install gcc`) or set CC")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=target.stem, suffix=".so.tmp", dir=directory)
        os.close(fd)
    except OSError as exc:
        raise CallgrindError(f"cannot write the valgrind shim under {directory}: {exc.strerror or exc}") from None
    try:
        out = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", partial, str(SHIM_SOURCE)],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            detail = (out.stderr.strip().splitlines() or ["no message"])[0]
            hint = " (install valgrind's headers: `apt-get install valgrind`)" if "valgrind" in out.stderr else ""
            raise CallgrindError(f"cannot build the valgrind shim with {compiler}: {detail}{hint}")
        os.replace(partial, target)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CallgrindError(f"cannot build the valgrind shim with {compiler}: {exc}") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


class Client:
    """Callgrind's client requests, through the shim. Outside valgrind each request does nothing.

    Tracks the collection state, since the only request for it is a toggle.
    """

    def __init__(self, library: str | os.PathLike) -> None:
        try:
            self._lib = ctypes.CDLL(os.fspath(library))
        except OSError as exc:
            raise CallgrindError(f"cannot load the valgrind shim {library}: {exc}") from None
        self._lib.perf_dump_stats_at.argtypes = [ctypes.c_char_p]
        self._lib.perf_running_on_valgrind.restype = ctypes.c_int
        self.toggle = self._lib.perf_toggle_collect  # bound once: the lookup is inside the counted region
        self.collecting = False
        self.instrumented = False
        self.primed = False
        self.dumps = 0  # dumps requested so far: callgrind numbers the files the same way
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        # Callgrind follows a forked child into files of its own pid, numbered from 1 again.
        self.dumps = 0

    def running(self) -> int:
        """RUNNING_ON_VALGRIND: 0 outside valgrind, else the depth of valgrinds."""
        return self._lib.perf_running_on_valgrind()

    def start(self) -> None:
        self._lib.perf_start_instrumentation()
        self.instrumented = True

    def stop(self) -> None:
        self._lib.perf_stop_instrumentation()
        self.instrumented = False

    def zero(self) -> None:
        self._lib.perf_zero_stats()

    def dump(self, name: str) -> None:
        """CALLGRIND_DUMP_STATS_AT(name): write the counts so far to a new file, then zero them."""
        self._lib.perf_dump_stats_at(clean_name(name).encode("utf-8", "replace"))
        self.dumps += 1


def clean_name(name: str) -> str:
    """A dump name callgrind can carry in one header line: no line breaks, at most MAX_NAME characters."""
    return " ".join(str(name).splitlines())[:MAX_NAME]


_client: Client | None = None


def client() -> Client:
    """This process's client (the shim built and loaded on first call)."""
    global _client
    if _client is None:
        _client = Client(build_shim())
    return _client


def under_callgrind() -> bool:
    """Whether this process was launched by ``command`` and runs under valgrind now.

    The launcher's marker alone is not enough: a process that inherited it (an xdist worker, a
    subprocess) is not itself under valgrind.
    """
    return bool(os.environ.get(ENV_DIR)) and client().running() > 0


# --------------------------------------------------------------------------- counting


@dataclass(frozen=True)
class Count:
    """The counts of ``calls`` calls of one benchmark, and of the empty region measured beside them."""

    name: str
    calls: int
    total: Counters       # every collected region of the benchmark, summed
    overhead: Counters    # one empty region: switching collection on and straight off again
    regions: int          # collected regions: 1, or ``calls`` when a setup ran before each call

    @property
    def per_call(self) -> Counters:
        """Counts per call, the switching overhead of every region taken off."""
        return (self.total - self.overhead.scaled(self.regions)).clamped().scaled(1 / self.calls)


def _out_dir() -> str:
    directory = os.environ.get(ENV_DIR)
    if not directory:
        raise CallgrindError(f"not launched by perf.callgrind.command: {ENV_DIR} is not set")
    return directory


def _read_own_dumps(directory: str, first: int, names: list[str]) -> list[Dump]:
    """This process's dumps number ``first``, ``first + 1``, ..., which must carry ``names``.

    Opened by name (callgrind numbers a process's dumps 1, 2, ... and writes each before the
    request returns), not found by listing the directory: a listing's size and order vary with
    what else is there, and the counting process must allocate the same things every run.
    """
    dumps = []
    for i, name in enumerate(names):
        path = os.path.join(directory, f"{OUT_PREFIX}{os.getpid()}.{first + i}")
        if not os.path.exists(path):
            raise CallgrindError(f"callgrind wrote no dump for {name!r}: {path} is missing")
        dump = parse_dump(path)
        if dump.name != clean_name(name):
            raise CallgrindError(f"{path}: this dump is {dump.trigger!r}, not the one expected ({clean_name(name)!r})")
        dumps.append(dump)
    return dumps


def count(target: Callable, args: tuple = (), *, name: str, calls: int = DEFAULT_CALLS, warmup: int = DEFAULT_WARMUP,
          cache_warmup: int = DEFAULT_CACHE_WARMUP, setup: Callable[[], tuple[tuple, dict]] | None = None,
          fresh: bool = True) -> Count:
    """Count ``calls`` calls of ``target(*args)`` under callgrind; dump them under ``name``.

    First ``warmup`` calls uninstrumented (fast: Python's adaptive interpreter specialises a
    function's bytecode only after several calls, and first calls fill library caches), then
    instrumentation on and ``cache_warmup`` calls with collection off (the simulated caches and
    branch predictor fill), then the counted calls. ``setup`` (pytest-benchmark's form: returns
    ``(args, kwargs)``) runs before every call, outside collection. With ``fresh`` (the
    default) instrumentation is on for this count only: starting it resets callgrind's
    simulated caches, so what ran before does not change the counts. Without ``fresh``, it is
    left on (and the warm-up runs instrumented). The garbage collector is off meanwhile.
    """
    if calls < 1 or warmup < 0 or cache_warmup < 0:
        raise CallgrindError(f"count needs calls >= 1 and warm-ups >= 0, got calls={calls}, warmup={warmup}, "
                             f"cache_warmup={cache_warmup}")
    if not under_callgrind():
        raise CallgrindError(f"cannot count {name!r}: this process does not run under callgrind "
                             "(launch it with perf.callgrind.command)")
    c = client()
    if c.collecting:
        raise CallgrindError("callgrind is already collecting: count() does not nest")
    if fresh and c.instrumented:
        c.stop()
    directory = _out_dir()
    gc_was_enabled = gc.isenabled()
    gc.collect()  # before the warm-up: a full collection walks the whole heap, evicting the caches
    if os.environ.get("PERF_CALLGRIND_TRIM"):
        _malloc_trim()
    gc.disable()
    try:
        if not c.primed:
            _prime(c)
        _calls(target, args, setup, warmup)
        if not c.instrumented:
            c.start()
        _calls(target, args, setup, cache_warmup)
        _regions(c, target, args, setup, calls, name)
    finally:
        if c.collecting:  # an exception inside a region: switch collection off again
            c.toggle()
            c.collecting = False
        if fresh and c.instrumented:
            c.stop()
        if gc_was_enabled:
            gc.enable()
    overhead, total = (d.totals for d in _read_own_dumps(directory, c.dumps - 1, [f"{name} [overhead]", name]))
    return Count(clean_name(name), calls, total, overhead, 1 if setup is None else calls)


def _malloc_trim() -> None:
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _calls(target: Callable, args: tuple, setup: Callable[[], tuple[tuple, dict]] | None, n: int) -> None:
    for _ in range(n):
        call_args, kwargs = setup() if setup is not None else (args, {})
        target(*call_args, **kwargs)


def _region(c: Client, target: Callable, args: tuple, kwargs: dict, n: int) -> None:
    """One counted region: collection on, ``n`` calls, collection off.

    The overhead region is this very code with ``n == 0`` (the loop's set-up, the flag, the
    toggles), so that subtracting it leaves the calls alone.
    """
    toggle = c.toggle
    toggle()
    c.collecting = True
    for _ in range(n):
        target(*args, **kwargs)
    toggle()
    c.collecting = False


def _regions(c: Client, target: Callable, args: tuple, setup: Callable[[], tuple[tuple, dict]] | None,
             calls: int, name: str) -> None:
    """The empty region, dumped as the overhead, then the calls, dumped under ``name``.

    Nothing runs between the two but the dump request: the files are read afterwards.
    """
    c.zero()
    _region(c, target, args, {}, 0)
    c.dump(f"{name} [overhead]")
    if setup is None:
        _region(c, target, args, {}, calls)
    else:
        for _ in range(calls):
            call_args, kwargs = setup()
            _region(c, target, call_args, kwargs, 1)
    c.dump(name)


def _nothing(*args: object, **kwargs: object) -> None:
    return None


def _prime(c: Client) -> None:
    """Run the counted region's code many times, collecting nothing, before a process's first count.

    Python's adaptive interpreter rewrites a function's bytecode during its first executions
    (quickening, then specialising each instruction), and retries an instruction it could not
    specialise (the call of the ctypes toggle) after a back-off that doubles up to ~4000
    executions. Inside a counted region that work is counted: without this, a process's first
    count came out ~4% higher, and the 7th count of a series ~1000 instructions higher
    (docs/results/counts.md). Collection is toggled on and straight off: nothing is collected
    while instrumentation is off.
    """
    for _ in range(PRIME_REGIONS):
        _region(c, _nothing, (), {}, 1)
    c.primed = True


def iter_counts(dumps: Iterable[Dump]) -> dict[str, Counters]:
    """Totals per dump name (client-request dumps only), summed where a name repeats."""
    out: dict[str, Counters] = {}
    for d in dumps:
        if d.name is not None:
            out[d.name] = out.get(d.name, Counters()) + d.totals
    return out


# --------------------------------------------------------------------------- the zygote server
#
# Counts depend on the memory layout of the process that counts, and that layout on everything
# the process did before: the same benchmark counted after a different selection of others, or
# from another working directory, came out up to 2% apart (torch at seed). A zygote fixes it:
# one process under callgrind imports the libraries, then forks a child per request; the child
# reads its request (what to count), counts, replies and exits. Every child starts from the same
# state, whatever was asked before or will be asked after (docs/results/counts.md).

SERVE_EOF = 3             # a child's exit status when there are no more requests
MAX_REQUEST = 1 << 20     # bytes of one request line


def load_handler(spec: str) -> Callable[[dict], dict]:
    """The function ``spec`` names: ``package.module:function`` or ``/path/to/file.py:function``."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise CallgrindError(f"handler {spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION")
    try:
        if where.endswith(".py"):
            import importlib.util

            module_spec = importlib.util.spec_from_file_location("perf_callgrind_handler", where)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(f"cannot load {where}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            import importlib

            module = importlib.import_module(where)
        return getattr(module, name)
    except (ImportError, AttributeError, OSError, SyntaxError) as exc:
        raise CallgrindError(f"handler {spec!r} cannot be loaded: {exc}") from None


def _read_line(fd: int) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def serve(handler: Callable[[dict], dict], requests: int = 0, replies: int = 1) -> None:
    """The zygote's loop: fork; the child answers one JSON request line with one JSON reply line.

    Replies are ``{"ok": handler(request)}`` or ``{"error": "one line"}``. Requests come on
    ``requests`` (stdin), one at a time (the client waits for each reply); replies go to
    ``replies``, which is moved off stdout first so that nothing the handler prints can mix
    with them. Returns when the requests end.
    """
    import json

    if replies == 1:
        replies = os.dup(1)
        os.dup2(2, 1)  # print() now goes to stderr
    if under_callgrind():
        c = client()
        if not c.primed:
            _prime(c)  # once, here: every child inherits the specialised bytecode
    gc.collect()
    gc.freeze()  # what the zygote holds is never traversed again by a child's collections
    while True:
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                line = _read_line(requests)
                if not line.strip():
                    status = SERVE_EOF
                else:
                    try:
                        reply = {"ok": handler(json.loads(line))}
                    except CallgrindError as exc:
                        reply = {"error": str(exc)}
                    except Exception as exc:  # noqa: BLE001 - any failure is a reply, never a dead server
                        reply = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}
                    os.write(replies, (json.dumps(reply) + "\n").encode())
                    status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code == SERVE_EOF:
            return
        if code != 0:
            why = f"signal {-code}" if code < 0 else f"exit status {code}"
            os.write(replies, (json.dumps({"error": f"the counting child died ({why}) before it replied"}) + "\n").encode())


OUT_DIR_NAME = "/dev/fd/3"  # the zygote's name for its dump folder


def path_name(index: int) -> str:
    """The zygote's name for the ``index``-th folder of a Server's ``pythonpath``."""
    return f"/dev/fd/{4 + index}"


class Server:
    """The caller's side of the zygote: runs it under callgrind and sends it requests.

        with Server("mypkg.counting:handle", out_dir, pythonpath=[repo]) as server:
            reply = server.request({"stage": "relu", ...})

    valgrind's own messages go to ``out_dir/valgrind.log``; a zygote that dies is a
    CallgrindError quoting the end of that log.
    """

    def __init__(self, handler: str, out_dir: str | os.PathLike, *, launch: Launch = Launch(),
                 preload: Sequence[str] = (), pythonpath: Sequence[str | os.PathLike] = (),
                 base: Mapping[str, str] | None = None, keep: Iterable[str] = (), python: str | None = None) -> None:
        import sys

        self.log = Path(out_dir, "valgrind.log")
        argv = [python or sys.executable, "-m", "perf.callgrind", "serve", handler]
        if preload:
            argv += ["--preload", ",".join(preload)]
        # The zygote sees no path that changes from run to run or from checkout to checkout: a shell
        # opens the dump folder (a fresh temporary name each run) and the pythonpath folders on
        # fixed descriptors, and the zygote names them through those (/dev/fd/3, /dev/fd/4, ...).
        # With the folder's name in its environment, torch's allocating stages counted up to 1.3%
        # apart from one run to the next (docs/results/counts.md).
        folders = [os.fspath(out_dir), *map(os.fspath, pythonpath)]
        named = [OUT_DIR_NAME, *(path_name(i) for i in range(len(pythonpath)))]
        opens = " ".join(f'{3 + i}<"${i + 1}"' for i in range(len(folders)))
        shell = ["sh", "-c", f'exec {opens} && shift {len(folders)} && exec "$@"', "sh", *folders]
        env = environment(named[0], base, launch, keep)
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([*named[1:], *filter(None, [env.get("PYTHONPATH")])])
        try:
            with open(self.log, "wb") as log:
                self._proc = subprocess.Popen([*shell, *command(argv, out_dir, launch)], env=env, cwd=launch.cwd,
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        except OSError as exc:
            raise CallgrindError(f"cannot start valgrind: {exc.strerror or exc}; {INSTALL_HINT}") from None

    def request(self, payload: dict) -> dict:
        """Send one request, wait for its reply; the handler's result, or a CallgrindError."""
        import json

        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write((json.dumps(payload) + "\n").encode())
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = b""
        if not line:
            self._proc.wait()
            raise CallgrindError(f"the counting process under valgrind ended (exit {self._proc.returncode}): "
                                 f"{self._log_tail()}")
        try:
            reply = json.loads(line)
        except ValueError:
            raise CallgrindError(f"the counting process replied something that is not JSON: {line[:200]!r}") from None
        if "error" in reply:
            raise CallgrindError(str(reply["error"]))
        return reply["ok"]

    def _log_tail(self) -> str:
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no log"
        interesting = [ln for ln in lines if not ln.startswith("==")] or lines
        return " | ".join(interesting[-3:])[:500] or "no message"

    def close(self) -> int:
        """End the requests; wait for the zygote; its exit status."""
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        return self._proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: Sequence[str]) -> int:
    """``python -m perf.callgrind serve HANDLER [--preload MOD,...]``: the zygote, under callgrind."""
    import sys

    if len(argv) < 2 or argv[0] != "serve":
        print("usage: python -m perf.callgrind serve MODULE:FUNCTION [--preload MOD,MOD]", file=sys.stderr)
        return 2
    try:
        handler = load_handler(argv[1])
        if len(argv) >= 4 and argv[2] == "--preload":
            import importlib

            for name in filter(None, argv[3].split(",")):
                importlib.import_module(name)  # before the first fork: imported once, by the zygote
        serve(handler)
    except CallgrindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    import sys

    from perf import callgrind as _canonical  # the importable module, not this __main__ copy

    sys.exit(_canonical.main(sys.argv[1:]))
