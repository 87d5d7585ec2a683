"""The baseline of one runner class: save it from the default branch, gate pull requests on it.

    python -m ci.gpu_baseline auto|save|compare --runner-class LABELS [--root DIR] [--out DIR]
                              [--threads N] [--require-cuda] [--accept-regression]
                              [--pytest-args "ARGS"] [-- PYTEST ARGS...]
    python -m ci.gpu_baseline list  [--runner-class LABELS] [--root DIR]
    python -m ci.gpu_baseline reset --runner-class LABELS [--key KEY | --all] [--root DIR]

auto: ``save`` on a push to the default branch ($DEFAULT_BRANCH, else main) and on a manual run
of it with $SAVE_BASELINE true; ``compare`` otherwise ($GITHUB_EVENT_NAME, $GITHUB_REF_NAME).

Before anything is measured: --out and the baseline root must be usable folders, and a
collect-only ``pytest perf`` (ci/probe.py) reads the GPU record and the machine fingerprint as
the perf plugin takes it; ``perf.machine.key`` of it names this machine's storage (ci/baselines.py).

save: ``pytest perf --benchmark-storage=file://ROOT/<class>/<key> --benchmark-save=<commit>``
under the class's lock: the plugin saves the run whole, under the next free number, and only when
every test passed; a save that is not a complete run is withdrawn; the newest KEEP runs are kept.

compare: the newest saved run is the baseline (it must load: a damaged one is an error, not a
pass). None yet: the benchmarks run, nothing is gated (no-baseline). One whose fingerprint
differs (``perf.machine.differences``, the plugin's rule; in practice threads or BLAS, the rest is
in the key): the benchmarks run, nothing is gated (foreign-baseline). Otherwise ``pytest perf
--benchmark-compare=<it>``: the plugin gates, with the run-to-run drift of the same storage.

Both write to --out (default gpu-results): environment.json (GPU, driver, CUDA), current.json
(pytest-benchmark JSON), gate.json / gate.md (verdicts, when compared), outcome.json. The job
summary gets the machine and the verdict table; $GITHUB_OUTPUT gets class, key, mode, status.

reset: forgets the baseline of this machine (--key another one, --all every one of the class);
the next save starts afresh. list: the baselines kept under the root (exit 2 if one is unreadable).

Exit status: 0 pass / saved / no baseline yet / foreign baseline / accepted regression,
1 regression, 2 usage or environment error (no CUDA with --require-cuda, pytest failed, nothing
saved, an unusable folder or baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from perf import command, gate, history, machine, render, results
from perf.baseline import compare_saved
from perf.cli import ERROR, PASS, REGRESSION, Parser, git, positive_int, run_main
from perf.errors import ResultsError, UsageError
from perf.metric import Metric

from . import baselines, github, gpu_env, probe
from .proc import PROJECT_ROOT, make_dir, parse_with_pytest_args, run_tee

PROG = "python -m ci.gpu_baseline"
KEEP_VARIABLE = "GPU_BASELINE_KEEP"
STACK_VARIABLE = "PERF_FAIL_ON_STACK_CHANGE"
MODES = ("auto", "save", "compare", "list", "reset")
OUTPUTS = ("current.json", "gate.json", "gate.md", "outcome.json", "environment.json", "stack-change.json",
           "stack-change.md", "history.md", "history.json")


def _keep_default() -> int:
    text = os.environ.get(KEEP_VARIABLE, "")
    return int(text) if text.strip().isdecimal() and int(text) > 0 else baselines.KEEP


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, allow_abbrev=False,
               description="Save, compare, list or reset the benchmark baseline of a runner class.",
               epilog="Arguments after -- go to pytest. Exit status: 0 pass/saved, 1 regression, 2 error.")
    p.add_argument("mode", choices=MODES)
    p.add_argument("--runner-class", default=os.environ.get("RUNNER_CLASS"),
                   help="the runner's labels, comma-separated or a JSON list (default: $RUNNER_CLASS)")
    p.add_argument("--root", help=f"baseline root (default: ${baselines.ROOT_VARIABLE}, else {baselines.DEFAULT_ROOT})")
    p.add_argument("--out", default="gpu-results", help="directory for this run's results (default gpu-results)")
    p.add_argument("--threads", type=positive_int, default=1, help="threads of torch and every BLAS/OpenMP pool (default 1)")
    p.add_argument("--require-cuda", action="store_true", help="exit 2 unless torch sees a CUDA device")
    p.add_argument("--accept-regression", action="store_true",
                   default=github.truthy(os.environ.get("PERF_ACCEPT_REGRESSION")),
                   help="report regressions but pass (default: $PERF_ACCEPT_REGRESSION)")
    p.add_argument("--pytest-args", default="", metavar="ARGS", help="pytest args as one shell-quoted string")
    p.add_argument("--keep", type=positive_int, default=_keep_default(),
                   help=f"saved runs kept per machine, besides those a step of the history points at (default: "
                        f"${KEEP_VARIABLE}, else {baselines.KEEP})")
    p.add_argument("--fail-on-stack-change", action="store_true",
                   default=github.truthy(os.environ.get(STACK_VARIABLE)),
                   help=f"fail when a stack change (another torch, CUDA, driver, numpy on the same hardware) makes "
                        f"benchmarks slower (default: ${STACK_VARIABLE}; off: reported only)")
    p.add_argument("--key", help="reset: the machine key to forget (default: this machine's)")
    p.add_argument("--all", action="store_true", help="reset: every machine of the runner class")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    opts = parse_with_pytest_args(build_parser(), argv)
    if opts.mode != "list" and not opts.runner_class:
        raise UsageError(f"{opts.mode}: --runner-class (or $RUNNER_CLASS) is required")
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


# --------------------------------------------------------------------------- pytest


def _with_threads(args: Sequence[str], threads: int) -> list[str]:
    given = any(a == "--perf-threads" or a.startswith("--perf-threads=") for a in args)
    return [*([] if given else [f"--perf-threads={threads}"]), *args]


def pytest_command(out: Path, args: Sequence[str], threads: int, storage: Path, *, save: str | None = None,
                   compare: Path | None = None) -> list[str]:
    """``pytest perf`` with this class and machine's storage, results in ``out``; saving as ``save``,
    or gated against the saved run ``compare``."""
    more = []
    if save:
        more += [f"--benchmark-save={save}", "--benchmark-save-data"]
    if compare is not None:
        more += [f"--benchmark-compare={compare}", f"--perf-report-json={out / 'gate.json'}",
                 f"--perf-report-md={out / 'gate.md'}"]
    return command.pytest_perf([*more, *_with_threads(args, threads)], json=out / "current.json",
                               storage=Path(storage).resolve(), quiet=False)


def probe_command(args: Sequence[str], threads: int) -> list[str]:
    return command.pytest_perf(["--collect-only", "-p", "ci.probe", *_with_threads(args, threads)])


def read_machine(opts: argparse.Namespace) -> tuple[dict, dict]:
    """(GPU/driver/CUDA record, machine fingerprint as the perf plugin takes it) from a collect-only
    ``pytest perf`` with the job's arguments: this process never initialises CUDA."""
    with tempfile.TemporaryDirectory(prefix="ci-probe-") as tmp:
        path = Path(tmp) / "probe.json"
        proc = subprocess.run(probe_command(opts.pytest, opts.threads), cwd=PROJECT_ROOT, capture_output=True, text=True,
                              env=machine.child_env(opts.threads, **{probe.VARIABLE: str(path)}))
        if proc.returncode:
            said = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
            raise UsageError(f"pytest perf --collect-only exited with status {proc.returncode}: "
                             f"{said[-1].strip() if said else 'no output'}")
        doc = results.read_json(path, "the probe's JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("fingerprint"), dict):
        raise UsageError(f"pytest perf --collect-only wrote no fingerprint to {path}")
    return doc.get("environment") or {}, doc["fingerprint"]


def git_commit() -> str:
    try:
        return os.environ.get("GITHUB_SHA") or git(PROJECT_ROOT, "rev-parse", "HEAD")
    except UsageError:
        return "local"


def _failed(what: str, tail: Sequence[str]) -> tuple[str, int, str, str]:
    return "error", ERROR, "\n".join([what, *tail[-8:]]), ""


# --------------------------------------------------------------------------- the modes


def save(opts, store: baselines.Store, key: str, env: dict) -> tuple[str, int, str, str]:
    out = Path(opts.out)
    name = baselines.safe_name(git_commit()[:12])
    with store.lock():
        store.migrate(key)
        store.tidy(key)
        before = set(store.saved(key))
        rc, tail = run_tee(pytest_command(out, opts.pytest, opts.threads, store.key_dir(key), save=name),
                           cwd=PROJECT_ROOT, env=env)
        new = [p for p in store.saved(key) if p not in before]
        problem = f"pytest exited with status {rc}" if rc else "" if new else "no benchmark ran (all skipped or deselected?)"
        if not problem:
            try:
                run = results.load_run(new[-1])
                if not run.complete:
                    problem = f"{new[-1]}: a benchmark kept no raw samples (stats.data): not a baseline the gate can use"
            except ResultsError as exc:
                problem = str(exc)
        if problem:
            for path in new:  # only a complete run that passed becomes a baseline
                path.unlink(missing_ok=True)
            return _failed(f"{problem}: nothing saved, the baseline in force is unchanged", tail)
        runs = list(results.readable_runs(store.saved(key)))
        store.prune(key, opts.keep, protect=history.protected(runs))
        first = not before
    stack = _stack_change_of_saved(opts, store, key, run) if first else None
    _history(store.key_dir(key), out)
    message = f"saved {len(run.results)} benchmarks as the baseline {new[-1]}"
    if stack is not None:
        return stack[0] if stack[0] != "pass" else "saved", stack[1], f"{message}; {stack[2]}", str(new[-1])
    return "saved", PASS, message, str(new[-1])


def _history(storage: Path, out: Path) -> None:
    """The machine's history after a save (trend, steps, drift, figures), for the job summary and artifacts."""
    history.main([str(storage), "--markdown", str(out / "history.md"), "--json", str(out / "history.json"),
                  "--figures", str(out / "history")])


def _stack_change_of_saved(opts, store: baselines.Store, key: str, run: results.Run) -> tuple[str, int, str] | None:
    """The first run of a new stack on this hardware, against the previous stack's newest baseline: every change
    reported under 'stack change'; it fails the job only with --fail-on-stack-change."""
    previous = store.previous_stack(key, run.fingerprint or {})
    if previous is None:
        return None
    old = store.newest(previous)
    rows = compare_saved(old, run, Metric.TIME.defaults.threshold if not run.metric.counted else run.metric.defaults.threshold)
    meta = {"title": "Stack change", "mode": "saved runs of two stacks on this hardware (measured at different moments)",
            "from": f"{previous} ({Path(old.source).name})", "to": key,
            "stack differences": "; ".join(machine.differences(old.fingerprint or {}, run.fingerprint or {})),
            "metric": run.metric.value}
    out = Path(opts.out)
    results.write_json(out / "stack-change.json", render.verdict_report(rows, meta))
    (out / "stack-change.md").write_text(render.to_markdown(rows, meta), encoding="utf-8")
    regressed = [c.name for c in rows if c.verdict == gate.REGRESSED]
    line = f"stack change from {previous}: {render.summary_line(rows)}"
    if regressed and opts.fail_on_stack_change:
        return "stack-change", REGRESSION, line
    return "pass", PASS, line


def _migrate_if_free(store: baselines.Store, key: str) -> str:
    """A compare moves the earlier layout into the storage too, unless a save holds the lock (it does it)."""
    if not store.old_layout(key):
        return ""
    try:
        with store.lock(timeout=0):
            store.migrate(key)
    except baselines.LockBusyError:
        return " (a save in progress is moving the earlier layout's baselines into the storage)"
    return ""


def compare(opts, store: baselines.Store, key: str, fingerprint: Mapping, env: dict) -> tuple[str, int, str, str]:
    out = Path(opts.out)
    note = _migrate_if_free(store, key)
    baseline = store.newest(key)  # a damaged newest run is a ResultsError: exit 2, nothing measured
    storage = store.key_dir(key)
    if baseline is None:
        previous = store.previous_stack(key, fingerprint)
        if previous is not None:
            return _compare_across_stacks(opts, store, previous, storage, env)
        rc, tail = run_tee(pytest_command(out, opts.pytest, opts.threads, storage), cwd=PROJECT_ROOT, env=env)
        if rc:
            return _failed(f"pytest exited with status {rc}", tail)
        others = [k for k in store.keys() if k != key]
        hint = f" (baselines exist for other machines of this class: {', '.join(others)})" if others else ""
        return "no-baseline", PASS, (f"no baseline for {store.runner_class}/{key} yet{hint}{note}: nothing gated; "
                                     "a push to the default branch saves one"), ""
    name = Path(baseline.source).name
    changes = machine.differences(baseline.fingerprint or {}, fingerprint)
    if changes:  # the plugin would refuse it (exit 4): measure, and say why nothing was gated
        rc, tail = run_tee(pytest_command(out, opts.pytest, opts.threads, storage), cwd=PROJECT_ROOT, env=env)
        if rc:
            return _failed(f"pytest exited with status {rc}", tail)
        return "foreign-baseline", PASS, (f"the baseline {name} was measured on a different setup "
                                          f"({'; '.join(changes)}): not gated"), baseline.source
    rc, tail = run_tee(pytest_command(out, opts.pytest, opts.threads, storage, compare=Path(baseline.source)),
                       cwd=PROJECT_ROOT, env=env)
    if rc not in (0, 1):  # 1 is a regression and nothing else; 4 a refused baseline, 7 a failed test, ...
        return _failed(f"pytest exited with status {rc}", tail)
    verdicts = results.load_verdicts(out / "gate.json")
    regressed = verdicts.names("regressed")
    if rc == 0 and verdicts.passed and not regressed:
        return "pass", PASS, f"compared with the baseline {name}", baseline.source
    if rc == 1 and regressed and not verdicts.passed:
        status, code = ("accepted", PASS) if opts.accept_regression else ("regression", REGRESSION)
        return status, code, verdicts.line or f"{len(regressed)} regressed", baseline.source
    return _failed(f"pytest's exit status {rc} and the gate's report ({verdicts.line or 'no summary'}) disagree", tail)


def _compare_across_stacks(opts, store: baselines.Store, previous: str, storage: Path, env: dict) -> tuple[str, int, str, str]:
    """No baseline of this stack yet, one of the previous stack on this hardware: the run compared with it
    (``--perf-stack-change``), every change reported as the stack change's; fails only with --fail-on-stack-change."""
    out = Path(opts.out)
    old = store.newest(previous)
    cmd = pytest_command(out, [*opts.pytest, "--perf-stack-change"], opts.threads, storage, compare=Path(old.source))
    rc, tail = run_tee(cmd, cwd=PROJECT_ROOT, env=env)
    if rc not in (0, 1):
        return _failed(f"pytest exited with status {rc}", tail)
    verdicts = results.load_verdicts(out / "gate.json")
    line = f"stack change from {previous}: {verdicts.line}"
    if rc == 1 and opts.fail_on_stack_change and not opts.accept_regression:
        return "stack-change", REGRESSION, line, old.source
    return "stack-change", PASS, f"{line} (reported, not gated: set {STACK_VARIABLE} to gate it)", old.source


def summary_markdown(runner_class: str, mode: str, status: str, message: str, record: Mapping, gate_md: str,
                     extra_md: Sequence[str] = ()) -> str:
    heads = {"saved": "baseline saved", "pass": "no regression", "no-baseline": "no baseline yet, not gated",
             "stack-change": "stack change: compared with the previous stack's baseline",
             "foreign-baseline": "baseline from another setup, not gated", "regression": "regression: fail",
             "accepted": "regression accepted by label", "error": "error: fail"}
    lines = [f"## GPU benchmarks, runner class `{runner_class}` ({mode}): {heads.get(status, status)}", ""]
    if message:
        lines += ["```", message.strip(), "```", ""] if "\n" in message.strip() else [message, ""]
    lines += [gpu_env.markdown(record, runner_class), ""]
    for md in extra_md:
        lines += [md.strip(), ""]
    if gate_md:
        lines += [gate_md.strip(), ""]
    return "\n".join(lines)


def run_measure(opts, env_vars: Mapping[str, str]) -> int:
    """save or compare; whatever happens, outcome.json (where --out allows), the job summary and outputs."""
    out = Path(opts.out)
    store = baselines.Store(baselines.root(opts.root), opts.runner_class)
    mode, key, status, code, message, where = opts.mode, "", "error", ERROR, "", ""
    record: dict = {}
    written = False
    try:
        mode = resolve_mode(opts.mode, env_vars)
        make_dir(out, "--out")
        written = True
        for stale in OUTPUTS:
            (out / stale).unlink(missing_ok=True)
        make_dir(store.dir, "the baseline folder of the runner class")
        record, fingerprint = read_machine(opts)
        if opts.require_cuda and not record.get("cuda_available"):
            raise UsageError(f"torch {record.get('torch')} sees no CUDA device on this runner (--require-cuda)")
        key = machine.key(fingerprint)
        record.update(runner_class=store.runner_class, key=key, fingerprint=fingerprint)
        results.write_json(out / "environment.json", record)
        env = machine.child_env(opts.threads)
        if mode == "save":
            status, code, message, where = save(opts, store, key, env)
        else:
            status, code, message, where = compare(opts, store, key, fingerprint, env)
    except (UsageError, ResultsError) as exc:
        status, code, message = "error", ERROR, str(exc)
    except OSError as exc:  # a disk that fills up, a folder that changed under us: said, never a traceback
        status, code, message = "error", ERROR, f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    gate_md, extra_md = "", []
    if written:
        results.write_json(out / "outcome.json", {"runner_class": store.runner_class, "key": key, "mode": mode,
                                                  "status": status, "exit": code, "message": message, "baseline": where})
        if (out / "gate.md").is_file():
            gate_md = (out / "gate.md").read_text(encoding="utf-8", errors="replace")
        extra_md = [(out / name).read_text(encoding="utf-8", errors="replace") for name in ("stack-change.md", "history.md")
                    if (out / name).is_file()]
    github.append_summary(summary_markdown(store.runner_class, mode, status, message, record, gate_md, extra_md))
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
    if base.exists() and not base.is_dir():
        raise UsageError(f"baseline root {str(base)!r} is a file, not a folder")
    classes = [opts.runner_class] if opts.runner_class else sorted(
        p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) if base.is_dir() else []
    rows, problems = [], []
    for c in classes:
        found, unreadable = baselines.Store(base, c).describe()
        rows += found
        problems += unreadable
    print(json.dumps(rows, indent=2))
    for problem in problems:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
    if not rows:
        print(f"no baselines under {base}", file=sys.stderr)
    return ERROR if problems else PASS


def run_reset(opts) -> int:
    store = baselines.Store(baselines.root(opts.root), opts.runner_class)
    key = None if opts.all else (opts.key or machine.key(read_machine(opts)[1]))
    removed = store.reset(key)
    print(f"reset {store.runner_class}: {', '.join(removed) if removed else 'nothing to remove'}"
          f"{'' if removed or opts.all else f' (no baseline for {key})'}")
    return PASS


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
        if opts.mode == "list":
            return run_list(opts)
        if opts.mode == "reset":
            return run_reset(opts)
        return run_measure(opts, os.environ)

    return run_main(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
