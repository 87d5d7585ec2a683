"""One report from the results of every runner class (the artifacts of the GPU matrix jobs).

    python -m ci.merge_report DIR... --out OUT [--report-module perf.report]

Each directory under DIR holding an ``outcome.json`` is one runner class's result (as written by
``python -m ci.gpu_baseline``). Writes OUT/summary.md (one row per class: machine, mode, outcome,
verdict counts; then each class's verdict table), OUT/classes.json, OUT/results/<class>.json
(each class's pytest-benchmark JSON), then runs ``python -m perf.report OUT/results/*.json
--out OUT`` for the tables and figures across classes. The summary goes to the job summary.

Exit status: 0, or 2 when no result is found or the report command fails. The gate itself is
decided in each class's job; this one only reports.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from . import ERROR, PASS, github, gpu_env
from .proc import PROJECT_ROOT


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def collect(dirs: Sequence[Path]) -> list[dict]:
    """One entry per runner-class result found under ``dirs``, sorted by class."""
    entries = []
    for top in dirs:
        for outcome_file in sorted(Path(top).rglob("outcome.json")):
            d = outcome_file.parent
            outcome = _load(outcome_file) or {}
            entries.append({
                "dir": d,
                "class": outcome.get("runner_class") or d.name,
                "outcome": outcome,
                "environment": _load(d / "environment.json") or {},
                "gate": _load(d / "gate.json"),
                "gate_md": (d / "gate.md").read_text(encoding="utf-8") if (d / "gate.md").exists() else "",
                "results": d / "current.json" if (d / "current.json").exists() else None,
            })
    return sorted(entries, key=lambda e: e["class"])


def summary_markdown(entries: Sequence[dict]) -> str:
    lines = ["## GPU benchmarks, all runner classes", "",
             "| Runner class | GPU | Driver | CUDA | Mode | Outcome | Verdicts |", "|:---|:---|:---|:---|:---|:---|:---|"]
    for e in entries:
        env, outcome = e["environment"], e["outcome"]
        verdicts = (e["gate"] or {}).get("summary", {}).get("line", "-")
        cells = [f"`{e['class']}`", gpu_env.gpu_names(env), env.get("driver") or "-", env.get("cuda_runtime") or "-",
                 outcome.get("mode", "-"), f"**{outcome.get('status', 'unknown')}**", verdicts]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    for e in entries:
        message = (e["outcome"].get("message") or "").strip()
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
    p = argparse.ArgumentParser(prog="python -m ci.merge_report", description="Merge the results of every runner class.")
    p.add_argument("dirs", nargs="+", type=Path, help="directories holding the classes' results (downloaded artifacts)")
    p.add_argument("--out", type=Path, default=Path("perf-report"), help="output directory (default perf-report)")
    p.add_argument("--report-module", default="perf.report", help="report command run on the merged JSON ('' to skip)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, run=subprocess.run) -> int:
    opts = parse_args(argv)
    entries = collect(opts.dirs)
    if not entries:
        github.annotate("error", f"no runner-class results (outcome.json) under {', '.join(map(str, opts.dirs))}",
                        title="GPU report")
        return ERROR
    results = opts.out / "results"
    results.mkdir(parents=True, exist_ok=True)
    files = []
    for e in entries:
        if e["results"] is not None:
            files.append(results / f"{e['class']}.json")
            shutil.copyfile(e["results"], files[-1])
    listed = [{k: v for k, v in e.items() if k not in ("dir", "results", "gate_md")} for e in entries]
    (opts.out / "classes.json").write_text(json.dumps(listed, indent=2, default=str) + "\n", encoding="utf-8")
    md = summary_markdown(entries)
    (opts.out / "summary.md").write_text(md, encoding="utf-8")
    github.append_summary(md)
    print(md)
    if opts.report_module and files:
        cmd = report_command(opts.report_module, files, opts.out)
        print(f"$ {' '.join(cmd)}", flush=True)
        if run(cmd, cwd=PROJECT_ROOT).returncode:
            github.annotate("error", f"{opts.report_module} failed on {len(files)} result file(s)", title="GPU report")
            return ERROR
    return PASS


if __name__ == "__main__":
    sys.exit(main())
