"""Counts measure the code that runs (issue 20), for docs/results/counts.md: a stage replaced by a plugin's
``pytest_configure``, a variable that picks numpy's code path, the first count on a fresh machine, the cost.

    python studies/count_config_study.py --workdir DIR [--reps 2] [--parts config,env,fresh,cost] [--out PATH]

1. Configuration: with the test-only plugin tests/plugins/configured.py (it swaps numpy's relu in its
   ``pytest_configure``, chosen by RELU_FORM, not a PERF_ variable), one counted run saved, then
   ``--reps`` compare runs each of unchanged code, RELU_FORM=where and RELU_FORM=extra
   (``--perf-size seed --perf-backend numpy``): flagged or not, per run.
2. The environment: numpy's stages at seed counted and timed with and without
   NPY_DISABLE_CPU_FEATURES (numpy's dispatched SIMD targets off), side by side.
3. A fresh machine: a fresh clone of this checkout, an empty cache folder (XDG_CACHE_HOME): the first
   counted run (seed, numpy) must pass.
4. The cost: the seed preset, numpy and torch-cpu, every stage, out= form and step, counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: perf comes from this checkout

from perf import command  # noqa: E402
from perf.cli import run_main  # noqa: E402
from perf.results import load_run, load_verdicts  # noqa: E402
from studies import common  # noqa: E402

PROG = "python studies/count_config_study.py"
COUNT = ["--perf-metric", "instructions"]
NUMPY_SEED = ["--perf-size", "seed", "--perf-backend", "numpy"]
PLUGIN = ["-p", "tests.plugins.configured"]
PARTS = {"config": "configuration", "env": "environment", "fresh": "fresh", "cost": "cost"}
NARROW = {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"}  # numpy 2.4's dispatched targets


def run(args: list[str], work: Path, cwd: Path = ROOT, env: dict | None = None, ok=(0, 1)) -> tuple[int, float]:
    proc, wall = common.run(PROG, command.pytest_perf(args, storage=work / "storage"), cwd, env, ok)
    return proc.returncode, wall


def configuration(work: Path, reps: int) -> dict:
    base = [*COUNT, *NUMPY_SEED, *PLUGIN]
    run([*base, "--benchmark-save=configured"], work)
    found: dict[str, list] = {}
    for rep in range(reps):
        for form in ("", "where", "extra"):
            report = work / f"config-{form or 'unchanged'}-{rep}.json"
            rc, wall = run([*base, "--benchmark-compare=0001", f"--perf-report-json={report}"], work,
                           env={"RELU_FORM": form} if form else None)
            rows = load_verdicts(report).rows
            found.setdefault(form or "unchanged", []).append(
                {"rc": rc, "wall": wall, "regressed": [r["name"] for r in rows if r["verdict"] == "regressed"],
                 "relu": next((r.get("ratio") for r in rows if r["name"].endswith("test_stage[seed-relu-numpy]")), None)})
    return found


def environment(work: Path) -> dict:
    out = {}
    for label, env in (("all", None), ("narrow", NARROW)):
        counted, timed = work / f"env-count-{label}.json", work / f"env-time-{label}.json"
        run([*COUNT, *NUMPY_SEED, "-k", "test_stage[", f"--benchmark-json={counted}"], work, env=env, ok=(0,))
        run([*NUMPY_SEED, "-k", "test_stage[", f"--benchmark-json={timed}"], work, env=env, ok=(0,))
        c, t = load_run(counted), load_run(timed)
        out[label] = {"path": c.fingerprint.get("code_path"), "timed_path": t.fingerprint.get("code_path"),
                      "counts": {n.partition("[")[2][:-1]: r.samples[0] for n, r in c.results.items()},
                      "times": {n.partition("[")[2][:-1]: min(r.per_process()) for n, r in t.results.items()}}
    return out


def fresh_machine(work: Path) -> dict:
    clone, cache = work / "clone", work / "empty-cache"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    cache.mkdir()
    rc, wall = run([*COUNT, *NUMPY_SEED], work, cwd=clone, env={"XDG_CACHE_HOME": str(cache)}, ok=(0,))
    return {"rc": rc, "wall": wall, "shim": [p.name for p in (cache / "relu-step-perf").glob("*.so")]}


def cost(work: Path) -> dict:
    rc, wall = run([*COUNT, "--perf-size", "seed", "--perf-backend", "numpy,torch-cpu",
                    f"--benchmark-json={work / 'cost.json'}"], work, ok=(0,))
    return {"wall": wall, "benchmarks": len(load_run(work / "cost.json").results)}


def render(study: dict, meta: dict) -> list[str]:
    lines = [f"Machine: {meta['machine']}. {meta['date']} UTC, commit {meta['commit']}, valgrind {meta['valgrind']}. "
             f"Command: `{meta['command']}`.", ""]
    if "configuration" in study:
        lines += _configuration(study["configuration"])
    else:
        lines.append("(the configuration part was not run here)")
    if "environment" in study:
        lines += _environment(study["environment"])
    if "fresh" in study:
        fresh = study["fresh"]
        lines += ["", f"### A fresh clone, an empty cache folder: the first counted run exited {fresh['rc']} in "
                      f"{fresh['wall']:.0f} s and built {', '.join(fresh['shim']) or 'no shim'} there."]
    if "cost" in study:
        spent = study["cost"]
        lines += ["", f"### Cost: the seed preset, numpy and torch-cpu, every stage, out= form and step: "
                      f"{spent['benchmarks']} benchmarks counted in {spent['wall'] / 60:.1f} min (target: within 5)."]
    return [*lines, ""]


def _configuration(found: dict) -> list[str]:
    lines = ["### A stage replaced in a plugin's pytest_configure (tests/plugins/configured.py, RELU_FORM)", "",
             "| relu's form | runs failed (exit 1) | relu's change | benchmarks REGRESSED, per run |", "|---|---:|---|---|"]
    for form, runs in found.items():
        changes = ", ".join(f"{(r['relu'] - 1) * 100:+.1f}%" if r["relu"] else "-" for r in runs)
        flagged = "; ".join(", ".join(n.rpartition("::")[2] for n in r["regressed"]) or "none" for r in runs)
        lines.append(f"| {form} | {sum(r['rc'] == 1 for r in runs)}/{len(runs)} | {changes} | {flagged} |")
    return lines


def _environment(env: dict) -> list[str]:
    lines = ["", "### NPY_DISABLE_CPU_FEATURES (numpy's dispatched SIMD targets off), counted and timed", "",
             f"Code path counted: all features {env['all']['path']}, narrowed {env['narrow']['path']}; timed: all "
             f"{env['all']['timed_path']}, narrowed {env['narrow']['timed_path']}.", "",
             "| numpy stage at seed | instructions, all | narrowed | change | time, all | narrowed | change |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, count in env["all"]["counts"].items():
        narrow, t, nt = env["narrow"]["counts"][name], env["all"]["times"][name], env["narrow"]["times"][name]
        lines.append(f"| {name} | {count:,.0f} | {narrow:,.0f} | {(narrow / count - 1) * 100:+.1f}% | "
                     f"{t * 1e6:.2f} µs | {nt * 1e6:.2f} µs | {(nt / t - 1) * 100:+.1f}% |")
    return lines


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, lambda: _main(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    p = common.parser(PROG, __doc__, render=True)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--parts", default=",".join(PARTS), help=f"which parts to run, of {','.join(PARTS)}")
    args = p.parse_args(argv)
    work = Path(args.workdir)
    if args.render:
        doc = common.load(work)
    else:
        work.mkdir(parents=True, exist_ok=True)
        valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
        meta = {**common.meta("count_config_study.py", argv), "valgrind": valgrind}
        parts = args.parts.split(",")
        if unknown := set(parts) - set(PARTS):
            p.error(f"--parts: unknown part(s) {', '.join(sorted(unknown))}; accepted: {', '.join(PARTS)}")
        runners = {"config": lambda: configuration(work, args.reps), "env": lambda: environment(work),
                   "fresh": lambda: fresh_machine(work), "cost": lambda: cost(work)}
        study = {PARTS[part]: run() for part, run in runners.items() if part in parts}
        doc = {"meta": meta, "study": study}
        (work / "study.json").write_text(json.dumps(doc, indent=1))
    return common.publish(render(doc["study"], doc["meta"]), args.out)


if __name__ == "__main__":
    sys.exit(main())
