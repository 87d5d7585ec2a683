"""The baseline of one runner class: save it from the default branch, gate pull requests on it.

    python -m ci.gpu_baseline auto|save|compare --runner-class LABELS [--root DIR] [--out DIR]
                              [--threads N] [--require-cuda] [--accept-regression]
                              [--pytest-args "ARGS"] [-- PYTEST ARGS...]
    python -m ci.gpu_baseline list  [--runner-class LABELS] [--root DIR]
    python -m ci.gpu_baseline reset --runner-class LABELS [--key KEY | --all] [--root DIR]

auto: ``save`` on a push to the default branch ($DEFAULT_BRANCH, else main) and on a manual run
of it with $SAVE_BASELINE true; ``compare`` otherwise ($GITHUB_EVENT_NAME, $GITHUB_REF_NAME).

save: runs ``pytest perf`` and, only when it passed and every benchmark has its raw samples,
puts the results in force as the baseline of this runner class and machine fingerprint (see
ci/baselines.py: written aside, then swapped in atomically; an interrupted or failed run leaves
the previous baseline in force).

compare: runs ``pytest perf --benchmark-compare=<the baseline>``; the plugin's gate fails the
regressed benchmarks. No baseline for this fingerprint yet: the benchmarks run, nothing is gated.
A baseline whose full fingerprint differs (threads, BLAS) is reported, not gated.

Both record the GPU, driver and CUDA versions (environment.json) and write to --out (default
gpu-results): current.json (pytest-benchmark JSON), baseline.json (the one compared with),
history/ (the kept snapshots of this fingerprint, from which the plugin measures run-to-run
drift), gate.json / gate.md (verdicts), outcome.json. The job summary gets the machine and the verdict
table; $GITHUB_OUTPUT gets class, key, mode, status.

reset: forgets the baseline of this machine's fingerprint (--key another one, --all every one
of the class); the next save starts afresh. list: the baselines kept under the root.

Exit status: 0 pass / saved / no baseline yet / accepted regression, 1 regression,
2 usage or environment error (no CUDA with --require-cuda, pytest failed, nothing saved).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import ERROR, PASS, REGRESSION, baselines, github, gpu_env
from .proc import PROJECT_ROOT, child_env, parse_with_pytest_args, run_tee

MODES = ("auto", "save", "compare", "list", "reset")


class UsageError(Exception):
    """One line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see python -m ci.gpu_baseline --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m ci.gpu_baseline", allow_abbrev=False,
                description="Save, compare, list or reset the benchmark baseline of a runner class.",
                epilog="Arguments after -- go to pytest. Exit status: 0 pass/saved, 1 regression, 2 error.")
    p.add_argument("mode", choices=MODES)
    p.add_argument("--runner-class", default=os.environ.get("RUNNER_CLASS"),
                   help="the runner's labels, comma-separated or a JSON list (default: $RUNNER_CLASS)")
    p.add_argument("--root", help=f"baseline root (default: ${baselines.ROOT_VARIABLE}, else {baselines.DEFAULT_ROOT})")
    p.add_argument("--out", default="gpu-results", help="directory for this run's results (default gpu-results)")
    p.add_argument("--threads", type=int, default=1, help="threads of torch and every BLAS/OpenMP pool (default 1)")
    p.add_argument("--require-cuda", action="store_true", help="exit 2 unless torch sees a CUDA device")
    p.add_argument("--accept-regression", action="store_true",
                   default=github.truthy(os.environ.get("PERF_ACCEPT_REGRESSION")),
                   help="report regressions but pass (default: $PERF_ACCEPT_REGRESSION)")
    p.add_argument("--pytest-args", default="", metavar="ARGS", help="pytest args as one shell-quoted string")
    p.add_argument("--key", help="reset: the fingerprint key to forget (default: this machine's)")
    p.add_argument("--all", action="store_true", help="reset: every fingerprint of the runner class")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    opts = parse_with_pytest_args(build_parser(), argv, UsageError)
    if opts.mode != "list" and not opts.runner_class:
        raise UsageError(f"{opts.mode}: --runner-class (or $RUNNER_CLASS) is required")
    if opts.threads < 1:
        raise UsageError("--threads must be a positive integer")
    return opts


def resolve_mode(mode: str, env: Mapping[str, str]) -> str:
    """auto -> save or compare, from the event that started the workflow."""
    if mode != "auto":
        return mode
    event = env.get("GITHUB_EVENT_NAME", "")
    branch = env.get("GITHUB_REF_NAME", "")
    default = env.get("DEFAULT_BRANCH") or "main"
    if event == "push":
        return "save" if branch == default else "compare"
    if event == "workflow_dispatch" and github.truthy(env.get("SAVE_BASELINE")):
        if branch != default:
            raise UsageError(f"a baseline is saved from the default branch {default!r} only, not from {branch!r}")
        return "save"
    return "compare"


# --------------------------------------------------------------------------- measuring


def pytest_command(out: Path, args: Sequence[str], threads: int, baseline: Path | None) -> list[str]:
    """``pytest perf``, results in ``out``; with a baseline, compared with it, the saved runs in out/history."""
    cmd = [sys.executable, "-m", "pytest", "perf", "-p", "no:cacheprovider", f"--benchmark-json={out / 'current.json'}",
           f"--benchmark-storage=file://{(out / 'history').resolve()}"]
    if not any(a == "--perf-threads" or a.startswith("--perf-threads=") for a in args):
        cmd.append(f"--perf-threads={threads}")
    if baseline is not None:
        cmd += [f"--benchmark-compare={baseline}", "--perf-allow-foreign-baseline",
                f"--perf-report-json={out / 'gate.json'}", f"--perf-report-md={out / 'gate.md'}"]
    return [*cmd, *args]


def stage_history(store: baselines.Store, key: str, out: Path) -> int:
    """Copy the kept snapshots into out/history as saved runs (NNNN_<snapshot>.json), oldest first."""
    history = out / "history"
    shutil.rmtree(history, ignore_errors=True)
    history.mkdir(parents=True)
    snaps = store.history(key)
    for i, snap in enumerate(snaps, 1):
        shutil.copyfile(snap.baseline, history / f"{i:04d}_{snap.name}.json")
    return len(snaps)


def measured(path: Path) -> dict:
    """The pytest-benchmark JSON of a complete run: at least one benchmark, each with raw samples."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        benchmarks = doc["benchmarks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"no usable results in {path}: {exc}") from None
    if not benchmarks:
        raise UsageError(f"{path}: no benchmark ran (all skipped or deselected?)")
    bare = [b.get("fullname", "?") for b in benchmarks if not (b.get("stats") or {}).get("data")]
    if bare:
        raise UsageError(f"{path}: {len(bare)} benchmark(s) without raw samples, e.g. {bare[0]}")
    return doc


def run_fingerprint(doc: Mapping) -> dict | None:
    return (doc.get("machine_info") or {}).get("perf_fingerprint")


_PROBE = ("import json, sys; from ci import gpu_env; from perf import machine; machine.pin_threads(int(sys.argv[1])); "
          "print(json.dumps({'environment': gpu_env.collect(), 'fingerprint': machine.fingerprint()}, default=str))")


def probe(threads: int) -> tuple[dict, dict]:
    """(GPU/driver/CUDA record, machine fingerprint as the pytest plugin computes it, threads pinned first).

    In a child process: this one never initialises CUDA, so it holds no GPU memory or context
    while the benchmarks run.
    """
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(threads)], cwd=PROJECT_ROOT, env=child_env(threads),
                          capture_output=True, text=True)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"cannot read this machine's fingerprint: {last}")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return doc["environment"], doc["fingerprint"]


def git_commit() -> str:
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    proc = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


# --------------------------------------------------------------------------- the modes


def save(opts, store: baselines.Store, key: str, fingerprint: Mapping, env: dict) -> tuple[str, int, str, str]:
    out = Path(opts.out)
    rc, tail = run_tee(pytest_command(out, opts.pytest, opts.threads, None), cwd=PROJECT_ROOT, env=env)
    if rc != 0:
        return "error", ERROR, f"pytest exited with status {rc}: nothing saved, the baseline in force is unchanged\n" + \
            "\n".join(tail[-8:]), ""
    doc = measured(out / "current.json")
    meta = {"saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
            "run": os.environ.get("GITHUB_RUN_ID"), "ref": os.environ.get("GITHUB_REF"), "runner_class": store.runner_class,
            "benchmarks": len(doc["benchmarks"]), "pytest_args": opts.pytest}
    extra = [p for p in (out / "environment.json",) if p.exists()]
    snap = store.save(key, fingerprint, out / "current.json", meta, extra)
    return "saved", PASS, f"saved {len(doc['benchmarks'])} benchmarks as the baseline {snap.path}", str(snap.path)


def compare(opts, store: baselines.Store, key: str, env: dict) -> tuple[str, int, str, str]:
    out = Path(opts.out)
    snap = store.current(key)
    if snap is None:
        others = [k for k in store.keys() if k != key]
        rc, tail = run_tee(pytest_command(out, opts.pytest, opts.threads, None), cwd=PROJECT_ROOT, env=env)
        if rc != 0:
            return "error", ERROR, f"pytest exited with status {rc}\n" + "\n".join(tail[-8:]), ""
        hint = f" (baselines exist for other fingerprints of this class: {', '.join(others)})" if others else ""
        return "no-baseline", PASS, (f"no baseline for {store.runner_class}/{key} yet{hint}: nothing gated; "
                                     "a push to the default branch saves one"), ""
    baseline = out / "baseline.json"
    shutil.copyfile(snap.baseline, baseline)  # snapshots never change; a save meanwhile swaps in another
    stage_history(store, key, out)
    rc, tail = run_tee(pytest_command(out, opts.pytest, opts.threads, baseline), cwd=PROJECT_ROOT, env=env)
    if rc not in (0, 1):
        return "error", ERROR, f"pytest exited with status {rc}\n" + "\n".join(tail[-8:]), str(snap.path)
    verdicts = _read_json(out / "gate.json") or {}
    regressed = not verdicts.get("summary", {}).get("passed", True)
    if rc == 1 and not regressed:
        return "error", ERROR, "pytest failed, and not on a regression:\n" + "\n".join(tail[-8:]), str(snap.path)
    current = measured(out / "current.json")
    saved_fp = run_fingerprint(json.loads(baseline.read_text(encoding="utf-8")))
    now_fp = run_fingerprint(current)
    if saved_fp != now_fp:
        from perf import machine

        diff = "; ".join(machine.differences(saved_fp or {}, now_fp or {})) or "no fingerprint recorded"
        return "foreign-baseline", PASS, f"the baseline {snap.name} was measured on a different setup ({diff}): not gated", \
            str(snap.path)
    if not regressed:
        return "pass", PASS, f"compared with the baseline {snap.name}", str(snap.path)
    status, code = ("accepted", PASS) if opts.accept_regression else ("regression", REGRESSION)
    return status, code, verdicts["summary"].get("line", "regression"), str(snap.path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def summary_markdown(runner_class: str, mode: str, status: str, message: str, record: Mapping, gate_md: str) -> str:
    heads = {"saved": "baseline saved", "pass": "no regression", "no-baseline": "no baseline yet, not gated",
             "foreign-baseline": "baseline from another setup, not gated", "regression": "regression: fail",
             "accepted": "regression accepted by label", "error": "error: fail"}
    lines = [f"## GPU benchmarks, runner class `{runner_class}` ({mode}): {heads.get(status, status)}", ""]
    if message:
        lines += ["```", message.strip(), "```", ""] if "\n" in message.strip() else [message, ""]
    lines += [gpu_env.markdown(record, runner_class), ""]
    if gate_md:
        lines += [gate_md.strip(), ""]
    return "\n".join(lines)


def run_measure(opts, env_vars: Mapping[str, str]) -> int:
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("current.json", "baseline.json", "gate.json", "gate.md", "outcome.json", "environment.json"):
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(out / "history", ignore_errors=True)
    store = baselines.Store(baselines.root(opts.root), opts.runner_class)
    mode, key, status, code, message, where = opts.mode, "", "error", ERROR, "", ""
    record: dict = {}
    try:
        mode = resolve_mode(opts.mode, env_vars)
        record, fingerprint = probe(opts.threads)
        if opts.require_cuda and not record.get("cuda_available"):
            raise UsageError(f"torch {record.get('torch')} sees no CUDA device on this runner (--require-cuda)")
        key = baselines.fingerprint_key(fingerprint)
        record.update(runner_class=store.runner_class, key=key, fingerprint=fingerprint)
        (out / "environment.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        env = child_env(opts.threads)
        if mode == "save":
            status, code, message, where = save(opts, store, key, fingerprint, env)
        else:
            status, code, message, where = compare(opts, store, key, env)
    except (UsageError, baselines.BaselineError) as exc:
        status, code, message = "error", ERROR, str(exc)
    outcome = {"runner_class": store.runner_class, "key": key, "mode": mode, "status": status, "exit": code,
               "message": message, "baseline": where}
    (out / "outcome.json").write_text(json.dumps(outcome, indent=2) + "\n", encoding="utf-8")
    gate_md = (out / "gate.md").read_text(encoding="utf-8") if (out / "gate.md").exists() else ""
    github.append_summary(summary_markdown(store.runner_class, mode, status, message, record, gate_md))
    github.set_outputs(**{"class": store.runner_class, "key": key, "mode": mode, "status": status,
                          "gpu": gpu_env.gpu_names(record), "driver": record.get("driver") or "",
                          "cuda": record.get("cuda_runtime") or ""})
    level = {"error": "error", "regression": "error", "accepted": "warning", "foreign-baseline": "warning",
             "no-baseline": "notice"}.get(status)
    if level:
        github.annotate(level, message.strip().splitlines()[0] if message.strip() else status,
                        title=f"GPU benchmarks ({store.runner_class})")
    print(f"ci.gpu_baseline: {mode} {store.runner_class}/{key or '?'}: {status} (exit status {code})", flush=True)
    return code


def run_list(opts) -> int:
    base = baselines.root(opts.root)
    classes = [opts.runner_class] if opts.runner_class else sorted(
        p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) if base.is_dir() else []
    rows = [row for c in classes for row in baselines.Store(base, c).describe()]
    print(json.dumps(rows, indent=2))
    if not rows:
        print(f"no baselines under {base}", file=sys.stderr)
    return PASS


def run_reset(opts) -> int:
    store = baselines.Store(baselines.root(opts.root), opts.runner_class)
    key = None if opts.all else (opts.key or baselines.fingerprint_key(probe(opts.threads)[1]))
    removed = store.reset(key)
    print(f"reset {store.runner_class}: {', '.join(removed) if removed else 'nothing to remove'}"
          f"{'' if removed or opts.all else f' (no baseline for {key})'}")
    return PASS


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
        if opts.mode == "list":
            return run_list(opts)
        if opts.mode == "reset":
            return run_reset(opts)
    except (UsageError, baselines.BaselineError) as exc:
        print(f"ci.gpu_baseline: error: {exc}", file=sys.stderr)
        return ERROR
    return run_measure(opts, os.environ)


if __name__ == "__main__":
    sys.exit(main())
