"""A zygote: one ``pytest perf`` session that configures and collects once, then forks a fresh child
for every request (asv's ``ForkServer``, with pytest's configuration in it).

The zygote is a plain ``pytest perf`` of exactly the benchmarks it is to serve, with the session's
settings and the parent's ``-p`` plugins, conftest files and ini options: their ``pytest_configure``
and ``pytest_sessionstart`` hooks have run before the first fork, so whatever they change is what
every child measures. Instead of running the tests, the session serves (``serve``): it reads one
request line, forks, and the child answers it with one or more reply lines and exits, so what one
request did leaves nothing behind that the next sees.

Two uses: counting (the zygote runs under callgrind, a fork per count: ``perf.counting``) and timing
(a fork per measuring process: ``perf.processes.ForkedProcesses``).

Requests and replies travel on two pipes the client hands the zygote on fixed descriptors
(``FDS``), never on its standard streams, which pytest and the measured code may write to.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .errors import MeasureError

SERVE_ENV = "PERF_SERVE"            # set in a zygote: what it serves ("time" or "count")
FDS_ENV = "PERF_SERVE_FDS"          # set in a zygote: its request and reply descriptors, "R,W"
REQUESTS_FD, REPLIES_FD = 10, 11    # where the zygote finds them (below valgrind's own, above the folders)
MAX_LINE = 1 << 20                  # bytes of one request line
GRACE_S = 30.0                      # how long a zygote left on an error may take to end before it is killed

_PR_SET_PDEATHSIG = 1                # prctl(2): the signal a process gets when its parent ends
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

Send = Callable[[dict], None]
Handler = Callable[[dict, Send], None]


def serving() -> str:
    """What this process serves ('' when it is no zygote)."""
    return os.environ.get(SERVE_ENV, "")


# --------------------------------------------------------------------------- in the zygote


def _read_line(fd: int) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < MAX_LINE:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def _sender(fd: int) -> Send:
    def send(reply: dict) -> None:
        os.write(fd, (json.dumps(reply, allow_nan=False) + "\n").encode())

    return send


def serve(handler: Handler) -> None:
    """The zygote's loop: read one request, fork; the child answers it through ``handler(request, send)``,
    ends it with ``{"end": true}`` (or ``{"error": "one line"}``) and exits. Returns when the requests
    end. What the zygote holds is frozen out of the children's garbage collections."""
    requests, replies = (int(fd) for fd in os.environ[FDS_ENV].split(","))
    gc.collect()
    gc.freeze()
    while True:
        line = _read_line(requests)
        if not line.strip():
            return
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                send = _sender(replies)
                try:
                    handler(json.loads(line), send)
                    send({"end": True})
                except Exception as exc:  # noqa: BLE001 - any failure is a reply, never a dead zygote
                    send({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:1000]})
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            why = f"signal {-code}" if code < 0 else f"exit status {code}"
            _sender(replies)({"error": f"the measuring child died ({why}) before it finished"})


# --------------------------------------------------------------------------- the client


class Zygote:
    """The parent's side: starts the zygote (``argv``, e.g. ``pytest perf ...``, possibly under valgrind) and
    sends it requests.

        with Zygote(argv, env, cwd, log) as z:
            for reply in z.request({"name": ...}):
                ...

    ``fds`` opens files or folders on fixed descriptors of the zygote ({number: path}), so that it can
    name them by a path that never changes (``/dev/fd/N``). What the zygote writes goes to ``log``;
    a zygote that dies is a MeasureError quoting the end of it.
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | os.PathLike, log: Path,
                 fds: Mapping[int, str | os.PathLike] = {}) -> None:  # noqa: B006 - never mutated
        self.log = log
        req_r, self._requests = os.pipe()
        self._replies, rep_w = os.pipe()
        opened = {REQUESTS_FD: req_r, REPLIES_FD: rep_w}
        try:
            for number, path in fds.items():
                opened[number] = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0))
        except OSError as exc:
            self._close(opened.values())
            raise MeasureError(f"cannot open {exc.filename} for the zygote: {exc.strerror or exc}") from None
        try:
            with open(log, "wb") as out:
                # close_fds=False: Popen would close the placed descriptors after preexec_fn; everything else
                # this process opened is close-on-exec (Python's default) and does not reach the zygote.
                # process_group=0: the zygote and its children in a group of their own, killed together.
                self._proc = subprocess.Popen(list(argv), env={**env, FDS_ENV: f"{REQUESTS_FD},{REPLIES_FD}"}, cwd=cwd,
                                              stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                              close_fds=False, preexec_fn=lambda: _start(opened), process_group=0)
        except OSError as exc:
            raise MeasureError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        finally:
            self._close(opened.values())
        self._reader = os.fdopen(self._replies, "rb")

    @staticmethod
    def _close(fds) -> None:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def request(self, payload: dict, on_reply: Callable[[dict], None] | None = None) -> list[dict]:
        """Send one request; every reply line until its end (each also handed to ``on_reply`` as it comes).
        MeasureError for an error reply or a zygote that ended."""
        try:
            os.write(self._requests, (json.dumps(payload) + "\n").encode())
        except OSError:
            pass  # the zygote is gone: the read below says why
        replies = []
        while True:
            line = self._reader.readline()
            if not line:
                self._proc.wait()
                raise MeasureError(f"the zygote ended (exit status {self._proc.returncode}): {self.tail()}")
            try:
                reply = json.loads(line)
            except ValueError:
                raise MeasureError(f"the zygote replied something that is not JSON: {line[:200]!r}") from None
            if "error" in reply:
                raise MeasureError(str(reply["error"]))
            if reply.get("end"):
                return replies
            replies.append(reply)
            if on_reply is not None:
                on_reply(reply)

    def tail(self) -> str:
        """The last lines the zygote wrote (valgrind's own '==' lines left out where there are others)."""
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no log"
        interesting = [ln for ln in lines if not ln.startswith("==")] or lines
        return " | ".join(interesting[-3:])[:500] or "no message"

    def close(self) -> int:
        """End the requests; wait for the zygote; its exit status."""
        self._end_requests()
        self._reader.close()
        return self._proc.wait()

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            self.close()
        else:
            self.stop(grace_s=GRACE_S if issubclass(kind, Exception) else 0.0)

    def stop(self, grace_s: float = GRACE_S) -> None:
        """End the zygote on an error: the requests end, and it has ``grace_s`` to end by itself, after the
        child it waits for (a child that has answered may still be writing: under callgrind, its dump);
        then its process group is killed, what is left of its children with it. Leaving a ``with`` block on
        an exception stops it so; on an interrupt (not an Exception), with no grace."""
        self._end_requests()
        self._reader.close()
        if self._proc.returncode is not None:
            return  # reaped already: its group cannot be named safely, and it waited for its children
        deadline = time.monotonic() + grace_s
        # WNOWAIT: an ended zygote stays unreaped, so that its process group still names its children
        while os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()

    def _end_requests(self) -> None:
        if self._requests >= 0:
            self._close([self._requests])
            self._requests = -1


def _start(opened: Mapping[int, int]) -> None:
    """In the new process, before exec: its descriptors placed; it dies with its parent (it has a process
    group of its own, which a signal to the parent's group no longer reaches)."""
    _place(opened)
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _place(opened: Mapping[int, int]) -> None:
    """In the new process, before exec: each descriptor ``opened[number]`` moved to ``number``, inheritable."""
    high = {number: fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for number, fd in opened.items()}
    for fd in opened.values():
        if fd not in opened:
            os.close(fd)
    for number, fd in high.items():
        os.dup2(fd, number, inheritable=True)
        os.close(fd)
