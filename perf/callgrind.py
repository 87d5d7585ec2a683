"""Counting instead of timing: instructions, branches, cache misses and a cycle estimate per call,
measured under valgrind's callgrind, the CPU metric that does not move with the machine's load.

- the launcher: ``valgrind_problem`` says whether valgrind is here; ``command`` wraps a command
  line in callgrind with the options that make counts repeatable (why each is there:
  docs/results/counts.md);
- the client requests, in the process that counts: a tiny C shim (perf/_valgrind_shim.c) built
  with the system compiler by the process that starts valgrind (``build_shim``) and loaded by the
  one that counts (``client``), so a numpy-only process never imports torch;
- ``count`` warms a call up, then counts ``calls`` calls with collection switched on around the
  calls only, and dumps them under a name; ``parse_dump`` reads callgrind's output files into
  ``Counters``.

Every failure is a ``CallgrindError`` with a one-line message.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import CallgrindError

ENV_DIR = "RELU_STEP_PERF_CALLGRIND_DIR"  # set by the launcher: where the counting process's dumps go
SHIM_ENV = "RELU_STEP_PERF_VALGRIND_SHIM"  # set by the launcher: the built client-request shim to load
OUT_PREFIX = "callgrind.out."             # dump files: OUT_PREFIX + PID [+ "." + N]
INSTALL_HINT = "install it with `apt-get install valgrind` on Debian/Ubuntu (`dnf install valgrind` on Fedora)"
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
    """The header lines (up to the first cost line) and the last few KiB of a callgrind file: all that
    is read of it (the body, one cost line per function, can be megabytes)."""
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


# The simulated caches are fixed (valgrind otherwise copies the host's, so counts would follow the
# machine): 32 KiB 8-way L1s and an 8 MiB 16-way LL, 64-byte lines, as pythonspeed.com's "consistent
# benchmarking in CI" and CPython's benchmark tooling use.
CACHES = ("--I1=32768,8,64", "--D1=32768,8,64", "--LL=8388608,16,64")


def command(argv: Sequence[str], out_dir: str | os.PathLike) -> list[str]:
    """The command line that runs ``argv`` under callgrind with nothing counted until ``count`` asks.

    Instrumentation and collection start off (``--instr-atstart=no``: start-up runs at valgrind's
    light speed); the counting process switches them on around its calls. Address-space layout
    randomisation is off (``setarch -R``) where setarch is installed: a layout that moves from run
    to run moves the counts (docs/results/counts.md).
    """
    exe = shutil.which("valgrind") or "valgrind"
    line = [exe, "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no", "--cache-sim=yes", "--branch-sim=yes",
            f"--callgrind-out-file={Path(out_dir, OUT_PREFIX)}%p",
            "--dump-line=no",  # totals are all we read: smaller dumps, written faster
            *CACHES, *argv]
    if shutil.which("setarch"):
        line = ["setarch", platform.machine(), "-R", *line]
    return line


# --------------------------------------------------------------------------- client requests (in the child)

SHIM_SOURCE = Path(__file__).with_name("_valgrind_shim.c")


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root, "relu-step-perf")


def build_shim(cache_dir: str | os.PathLike | None = None, fallback: str | os.PathLike | None = None) -> Path:
    """The compiled client-request shim, built with the system C compiler on first use.

    Cached as ``valgrind-shim-HASH.so`` (HASH of the source) in ``cache_dir`` (default
    ``$XDG_CACHE_HOME/relu-step-perf``, else ``~/.cache/relu-step-perf``), outside the repository;
    where that folder cannot be written, built in ``fallback`` (a run's own temporary folder) when
    one is given. Written to a temporary name and renamed, so that concurrent builders never load a
    half-written file.
    """
    try:
        source = SHIM_SOURCE.read_bytes()
    except OSError as exc:
        raise CallgrindError(f"cannot read {SHIM_SOURCE}: {exc.strerror or exc}") from None
    directory = Path(cache_dir) if cache_dir is not None else _cache_dir()
    name = f"valgrind-shim-{hashlib.sha256(source).hexdigest()[:16]}.so"
    if (directory / name).exists():
        return directory / name
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise CallgrindError("counting needs a C compiler to build its valgrind client-request shim: "
                             "install one (`apt-get install gcc`) or set CC")
    try:
        return _compile(compiler, directory, name)
    except _UnwritableError as exc:
        if fallback is None:
            raise CallgrindError(f"cannot write the valgrind shim under {directory}: {exc}; set XDG_CACHE_HOME to a "
                                 "writable folder") from None
        return _compile(compiler, Path(fallback), name)


class _UnwritableError(Exception):
    """The folder a shim was to be built in cannot be written (the message says why)."""


def _compile(compiler: str, directory: Path, name: str) -> Path:
    target = directory / name
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=target.stem, suffix=".so.tmp", dir=directory)
        os.close(fd)
    except OSError as exc:
        raise _UnwritableError(exc.strerror or str(exc)) from None
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
    """This process's client: the shim its launcher built (``SHIM_ENV``), else one built now, loaded on first call."""
    global _client
    if _client is None:
        _client = Client(os.environ.get(SHIM_ENV) or build_shim())
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


def prime() -> None:
    """Prime this process for counting (``_prime``), once: a zygote does it before its first fork."""
    c = client()
    if not c.primed:
        _prime(c)


def _prime(c: Client) -> None:
    """Run the counted region's code many times, collecting nothing, before a process's first count.

    Python's adaptive interpreter rewrites a function's bytecode during its first executions
    (quickening, then specialising each instruction), and retries an instruction it could not
    specialise (the call of the ctypes toggle) after a back-off that doubles up to ~4000
    executions. Inside a counted region that work is counted: without this, a process's first
    counts came out higher, and some later ones too (by how much: docs/results/counts.md).
    Collection is toggled on and straight off: nothing is collected
    while instrumentation is off.
    """
    for _ in range(PRIME_REGIONS):
        _region(c, _nothing, (), {}, 1)
    c.primed = True
