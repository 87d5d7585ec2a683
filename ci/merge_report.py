"""One report from the results of every runner class (the artifacts of the GPU matrix jobs).

    python -m ci.merge_report DIR... --out OUT [--report-module perf.report]

Each directory under DIR holding an ``outcome.json`` is one runner class's result (as written by
``python -m ci.gpu_baseline``). Writes OUT/summary.md (one row per class: machine, mode, outcome,
verdict counts; then each class's verdict table), OUT/classes.json, OUT/results/<class>.json
(each class's pytest-benchmark JSON), then runs ``python -m perf.report OUT/results/*.json
--out OUT`` for the tables and figures across classes. The summary goes to the job summary.

A file that is there but cannot be read (outcome, environment, verdicts, results) is named in
its class's row and the summary, and makes the exit status 2; the other classes are still
reported. Exit status: 0, or 2 when no result is found, a file is unreadable or the report
command fails. The gate itself is decided in each class's job; this one only reports.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from perf import results
from perf.cli import ERROR, PASS, Parser, run_main
from perf.errors import ResultsError

from . import github, gpu_env
from .proc import PROJECT_ROOT, make_dir

PROG = "python -m ci.merge_report"


def _object(what: str):
    """A loader of a JSON object (``what`` names it in the error)."""
    def load(path: Path) -> dict:
        doc = results.read_json(path, what)
        if not isinstance(doc, dict):
            raise ResultsError(f"{path}: not {what} (not a JSON object)")
        return doc
    return load


def _read(path: Path, load, problems: list[str]):
    """``load(path)``, or None when the file is absent; one that is there and unreadable is None and a line in ``problems``."""
    if not path.exists():
        return None
    try:
        return load(path)
    except ResultsError as exc:
        problems.append(str(exc))
        return None


def collect(dirs: Sequence[Path]) -> list[dict]:
    """One entry per runner-class result found under ``dirs``, sorted by class."""
    entries = []
    for top in dirs:
        for outcome_file in sorted(Path(top).rglob("outcome.json")):
            d, problems = outcome_file.parent, []
            outcome = _read(outcome_file, _object("an outcome"), problems) or {}
            entries.append({
                "dir": d,
                "class": str(outcome.get("runner_class") or d.name),
                "outcome": outcome,
                "environment": _read(d / "environment.json", _object("an environment record"), problems) or {},
                "gate": _read(d / "gate.json", results.load_verdicts, problems),
                "gate_md": (d / "gate.md").read_text(encoding="utf-8", errors="replace") if (d / "gate.md").is_file() else "",
                "results": d / "current.json" if _read(d / "current.json", results.load_run, problems) else None,
                "problems": problems,
            })
    return sorted(entries, key=lambda e: e["class"])


def summary_markdown(entries: Sequence[dict]) -> str:
    lines = ["## GPU benchmarks, all runner classes", "",
             "| Runner class | GPU | Driver | CUDA | Mode | Outcome | Verdicts |", "|:---|:---|:---|:---|:---|:---|:---|"]
    for e in entries:
        env, outcome = e["environment"], e["outcome"]
        status = "unreadable" if e["problems"] else outcome.get("status", "unknown")
        cells = [f"`{e['class']}`", gpu_env.gpu_names(env), env.get("driver") or "-", env.get("cuda_runtime") or "-",
                 outcome.get("mode", "-"), f"**{status}**", e["gate"].line if e["gate"] else "-"]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    for e in entries:
        message = "\n".join([str(e["outcome"].get("message") or "").strip(), *e["problems"]]).strip()
        if not e["gate_md"] and not message:
            continue
        lines += ["", f"<details><summary><code>{e['class']}</code>: {e['outcome'].get('status', 'unknown')}</summary>", ""]
        if message:
            lines += ["```", message, "```", ""]
        if e["gate_md"]:
            lines += [e["gate_md"].strip(), ""]
        lines.append("</details>")
    return "\n".join(lines) + "\n"


def report_command(module: str, files: Sequence[Path], out: Path) -> list[str]:
    return [sys.executable, "-m", module, *map(str, files), "--out", str(out)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = Parser(prog=PROG, description="Merge the results of every runner class.")
    p.add_argument("dirs", nargs="+", type=Path, help="directories holding the classes' results (downloaded artifacts)")
    p.add_argument("--out", type=Path, default=Path("perf-report"), help="output directory (default perf-report)")
    p.add_argument("--report-module", default="perf.report", help="report command run on the merged JSON ('' to skip)")
    return p.parse_args(argv)


def merge(opts: argparse.Namespace, run=subprocess.run) -> int:
    results_dir = make_dir(opts.out / "results", "--out")
    entries = collect(opts.dirs)
    if not entries:
        github.annotate("error", f"no runner-class results (outcome.json) under {', '.join(map(str, opts.dirs))}",
                        title="GPU report")
        return ERROR
    files = []
    for e in entries:
        if e["results"] is not None:
            files.append(results_dir / f"{e['class']}.json")
            shutil.copyfile(e["results"], files[-1])
    listed = [{"class": e["class"], "outcome": e["outcome"], "environment": e["environment"],
               "gate": e["gate"] and {"passed": e["gate"].passed, "line": e["gate"].line}, "problems": e["problems"]}
              for e in entries]
    results.write_json(opts.out / "classes.json", listed)
    md = summary_markdown(entries)
    (opts.out / "summary.md").write_text(md, encoding="utf-8")
    github.append_summary(md)
    print(md)
    code = PASS
    for problem in (p for e in entries for p in e["problems"]):
        github.annotate("error", problem, title="GPU report")
        code = ERROR
    if opts.report_module and files:
        cmd = report_command(opts.report_module, files, opts.out)
        print(f"$ {' '.join(cmd)}", flush=True)
        if run(cmd, cwd=PROJECT_ROOT).returncode:
            github.annotate("error", f"{opts.report_module} failed on {len(files)} result file(s)", title="GPU report")
            code = ERROR
    return code


def main(argv: Sequence[str] | None = None, run=subprocess.run) -> int:
    return run_main(PROG, lambda: merge(parse_args(argv), run))


if __name__ == "__main__":
    sys.exit(main())
