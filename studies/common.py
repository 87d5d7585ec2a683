"""What the study scripts share: their command line's common part, the header of a report, where it goes.

Imported as ``studies.common`` (each script puts the checkout on sys.path first, as it does for perf).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from perf import machine
from perf.cli import Parser
from perf.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


def parser(prog: str, doc: str | None, render: bool = False) -> Parser:
    """The script's parser, with the options every study takes: --workdir (kept: every run, study.json), --out,
    and with ``render`` --render (the report again from a finished study, see ``load``)."""
    p = Parser(prog=prog, description=(doc or "").strip().splitlines()[0])
    p.add_argument("--workdir", required=True, help="keep every run, its logs and study.json here")
    p.add_argument("--out", default="", help="also write the Markdown report to this file")
    if render:
        p.add_argument("--render", action="store_true", help="measure nothing: the report again from --workdir")
    return p


def meta(script: str, argv: Sequence[str]) -> dict[str, str]:
    """What a report names first: the machine, the date, the commit of this checkout, the command."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"machine": f"{machine.cpu_model()}, {len(machine.cpus())} vCPUs (shared)",
            "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}", "commit": commit,
            "command": shlex.join(["python", f"studies/{script}", *argv])}


def publish(lines: Sequence[str], out: str) -> int:
    """Print the report, and write it to ``out`` where given; the exit status (0)."""
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
    return 0


def run(prog: str, cmd: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None,
        ok: Collection[int] = (0,)) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd`` (said on stderr first) under the machine's child environment plus ``env``: the finished
    process and its wall seconds; a UsageError with the end of its output unless it exits with one of ``ok``."""
    said = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    print(f"{prog}: {said + ' ' if said else ''}{shlex.join(cmd)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), cwd=cwd, env={**machine.child_env(), **(env or {})}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in ok:
        raise UsageError(f"{shlex.join(cmd[:4])} ... exited {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-300:]}")
    return proc, wall


def study(work: Path, render: bool, measure: Callable[[], tuple[dict, dict]]) -> tuple[dict, dict]:
    """(study, meta): read back from ``work``'s study.json with ``render``; else measured by ``measure`` (threads
    pinned to 1, ``work`` made first) and written there."""
    if render:
        doc = load(work)
        return doc["study"], doc["meta"]
    work.mkdir(parents=True, exist_ok=True)
    machine.pin_threads(1)
    found, meta = measure()
    (work / "study.json").write_text(json.dumps({"meta": meta, "study": found}, indent=1))
    return found, meta


def load(work: Path) -> dict:
    """A finished study's study.json (for --render); a one-line UsageError where there is none."""
    try:
        doc = json.loads((work / "study.json").read_text())
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        return doc
    except (OSError, ValueError) as exc:
        raise UsageError(f"--render: no finished study in {work} ({exc})") from None
