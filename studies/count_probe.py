"""Counts the stages and the step under callgrind, through perf.callgrind, for docs/results/counts.md.

    python studies/count_probe.py launch --backend numpy --label base-1 --out runs.jsonl [--cwd DIR] [--aslr] ...
    python studies/count_probe.py report runs.jsonl    # Markdown: the spread of the base-* runs, the others against them

``launch`` runs one valgrind process per backend (``child`` is what runs inside it): every case
is bound and checked against the float64 reference (uninstrumented), then counted by
``perf.callgrind.count``. Variants for the detection experiment: ``--burn-stage S[:N],...``
(``--burn N``) replaces stage S (relu or grad_y_pred) by a test-only copy that runs N iterations
of a Python loop in its body (deterministic extra instructions; N=0 is the copy alone),
``--select`` swaps relu_backward to the select forms (np.where / masked_fill), ``--per-call N``
also counts the first N calls one by one, with no warm-up (is the first call different?).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from perf import callgrind  # noqa: E402

STEPS = ("train_step",)


# --------------------------------------------------------------------------- inside valgrind


def with_extra(backend: str, stage: str, k: int):
    """A test-only copy of ``stage`` (relu or grad_y_pred) with ``k`` iterations of a Python counting
    loop added to its body: deterministic extra instructions, no extra call layer, no memory traffic
    (a ``while`` loop: ``for _ in range(k)`` alone costs ~1000 instructions, 4% of numpy's relu)."""
    if backend == "numpy":
        import numpy as np

        def relu(h, out=None):
            r = np.maximum(h, 0, out=out)
            i = 0
            while i < k:
                i += 1
            return r

        def grad_y_pred(y_pred, y, out=None):
            out = np.subtract(y_pred, y, out=out)
            out *= 2
            i = 0
            while i < k:
                i += 1
            return out
    else:
        import torch

        def relu(h, out=None):
            r = torch.relu(h) if out is None else torch.clamp_min(h, 0, out=out)
            i = 0
            while i < k:
                i += 1
            return r

        def grad_y_pred(y_pred, y, out=None):
            r = torch.sub(y_pred, y, out=out).mul_(2)
            i = 0
            while i < k:
                i += 1
            return r
    return {"relu": relu, "grad_y_pred": grad_y_pred}[stage]


def select_forms(backend: str):
    """relu_backward as a select: the branchy forms this project replaced."""
    if backend == "numpy":
        import numpy as np

        return lambda grad, h: np.where(h < 0, 0, grad)
    return lambda grad, h: grad.masked_fill(h < 0, 0)


def pin(backend: str) -> None:
    from threadpoolctl import threadpool_limits

    pin.limits = threadpool_limits(limits=1)  # kept alive for the process
    if backend.startswith("torch"):
        import torch

        torch.set_num_threads(1)


def count_case(args: argparse.Namespace, stage: str, problem, results: dict) -> None:
    from perf.cases import Case, bind

    case = Case(stage, args.backend, problem)
    bound = bind(case)
    why = bound.check()
    if why:
        raise SystemExit(f"{case.id}: wrong result: {why}")
    target = bound.target
    if stage == "relu_backward" and args.select:
        target = select_forms(args.backend)
    extra = dict(item.partition(":")[::2] for item in args.burn_stage.split(",") if item)
    if stage in extra:
        target = with_extra(args.backend, stage, int(extra[stage] or args.burn))
    if args.per_call:
        # The first calls one by one, before any warm-up (the check above ran the stage once),
        # instrumentation started at the first: does the first call count differently?
        singles = [callgrind.count(target, bound.args, name=f"{case.id} call {i + 1}", calls=1, warmup=0,
                                   cache_warmup=0, setup=bound.setup, fresh=(i == 0)) for i in range(args.per_call)]
        callgrind.client().stop()
        results["per_call"][case.id] = [s.per_call.summary() for s in singles]
    start = time.perf_counter()
    got = callgrind.count(target, bound.args, name=case.id, calls=args.calls, warmup=args.warmup,
                          cache_warmup=args.cache_warmup, setup=bound.setup, fresh=not args.no_fresh)
    results["seconds"][case.id] = time.perf_counter() - start
    results["counts"][case.id] = {"per_call": got.per_call.summary(), "per_call_raw": vars(got.per_call),
                                  "overhead": vars(got.overhead), "total": vars(got.total), "calls": got.calls}


def handle(request: dict) -> dict:
    """The zygote server's handler (``--server``): count one stage, in a child forked for it."""
    import kernels

    args = argparse.Namespace(**{"no_fresh": False, "burn": 0, "burn_stage": "", "select": False, "per_call": 0, **request})
    pin(args.backend)
    problem = kernels.parse_problem(args.size) if args.size not in kernels.PRESETS else kernels.PRESETS[args.size]
    mine: dict = {"counts": {}, "per_call": {}, "seconds": {}, "pid": os.getpid()}
    count_case(args, args.stage, problem, mine)
    return mine


def child(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    import kernels

    pin(args.backend)
    problem = kernels.parse_problem(args.size) if args.size not in kernels.PRESETS else kernels.PRESETS[args.size]
    stages = list(kernels.STAGES) + list(STEPS) if args.stages == "all" else args.stages.split(",")
    results: dict = {"imports_s": time.perf_counter() - t0, "counts": {}, "per_call": {}, "seconds": {}, "pid": os.getpid()}
    if args.zygote:
        # A zygote: it forks without knowing the selection; each child reads its stage from a file.
        # Nothing in the forking process depends on which stages are asked for, or in what order.
        kernels.backend(args.backend)
        i = 0
        while True:
            pid = os.fork()
            if pid == 0:
                status = 1
                try:
                    wanted = Path(args.out + ".stages").read_text().split(",")
                    if i >= len(wanted):
                        status = 3
                    else:
                        mine: dict = {"counts": {}, "per_call": {}, "seconds": {}}
                        count_case(args, wanted[i], problem, mine)
                        Path(f"{args.out}.{i}").write_text(json.dumps(mine))
                        status = 0
                finally:
                    os._exit(status)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) == 3:
                break
            if status:
                raise SystemExit(f"the forked child number {i} failed (status {status})")
            i += 1
        for j in range(i):
            mine = json.loads(Path(f"{args.out}.{j}").read_text())
            for key in ("counts", "per_call", "seconds"):
                for bid, value in mine[key].items():
                    results[key][bid if bid not in results[key] else f"{bid}#{j}"] = value
    elif not args.fork:
        for stage in stages:
            count_case(args, stage, problem, results)
    else:
        # Every case in a process forked from the same state: what ran before cannot change its counts.
        kernels.backend(args.backend)  # imports the backend's library once, before forking
        for i, stage in enumerate(stages):
            pid = os.fork()
            if pid == 0:
                status = 1
                try:
                    mine: dict = {"counts": {}, "per_call": {}, "seconds": {}}
                    count_case(args, stage, problem, mine)
                    Path(f"{args.out}.{i}").write_text(json.dumps(mine))
                    status = 0
                finally:
                    os._exit(status)
            _, status = os.waitpid(pid, 0)
            if status:
                raise SystemExit(f"the forked child counting {stage} failed (status {status})")
        for i in range(len(stages)):
            mine = json.loads(Path(f"{args.out}.{i}").read_text())
            for key in ("counts", "per_call", "seconds"):
                for bid, value in mine[key].items():
                    results[key][bid if bid not in results[key] else f"{bid}#{i}"] = value  # a stage asked for twice
    results["total_s"] = time.perf_counter() - t0
    Path(args.out).write_text(json.dumps(results, indent=1))


# --------------------------------------------------------------------------- the parent


def launch(backend: str, size: str, *, stages: str = "all", calls: int = 10, warmup: int = callgrind.DEFAULT_WARMUP,
           cache_warmup: int = callgrind.DEFAULT_CACHE_WARMUP, cwd: str | None = None,
           aslr: bool = False, hash_seed: str | None = "0", env_pad: int = 0, burn: int = 0, burn_stage: str = "",
           select: bool = False, per_call: int = 0, no_fresh: bool = False, cache_sim: bool = True,
           branch_sim: bool = True, host_caches: bool = False, clean_env: bool = True, fork: bool = False,
           tunables: str = "", child_cwd: str | None = "/", zygote: bool = False, server: bool = False) -> dict:
    """One valgrind process counting ``stages`` of one backend; its results, with wall time."""
    problem = callgrind.valgrind_problem()
    if problem:
        raise SystemExit(problem)
    callgrind.build_shim()  # built here, not under valgrind
    out_dir = tempfile.mkdtemp(prefix="cg-out-")
    if server:
        result = _serve(backend, size, out_dir, stages=stages, calls=calls, warmup=warmup, cache_warmup=cache_warmup,
                        aslr=aslr, hash_seed=hash_seed, env_pad=env_pad, burn=burn, burn_stage=burn_stage,
                        select=select, per_call=per_call, clean_env=clean_env, tunables=tunables)
        result["config"] = {"backend": backend, "size": size, "cwd": cwd or os.getcwd(), "aslr": aslr,
                            "hash_seed": hash_seed, "env_pad": env_pad, "burn": burn, "burn_stage": burn_stage,
                            "select": select, "calls": calls, "warmup": warmup, "cache_warmup": cache_warmup,
                            "clean_env": clean_env, "tunables": tunables, "server": True, "root": str(ROOT),
                            "stages": stages}
        shutil.rmtree(out_dir, ignore_errors=True) if os.environ.get("PROBE_KEEP") is None else None
        return result
    result_file = Path(out_dir, "result.json")
    argv = [sys.executable, str(Path(__file__).resolve()), "child", "--backend", backend, "--size", size,
            "--stages", stages, "--calls", str(calls), "--warmup", str(warmup), "--cache-warmup", str(cache_warmup),
            "--out", str(result_file),
            "--burn", str(burn), "--burn-stage", burn_stage, "--per-call", str(per_call)]
    argv += ["--select"] * select + ["--no-fresh"] * no_fresh + ["--fork"] * fork + ["--zygote"] * zygote
    if zygote:  # the selection goes by file, so that the child's argv is the same for every selection
        import kernels

        wanted = list(kernels.STAGES) + list(STEPS) if stages == "all" else stages.split(",")
        Path(str(result_file) + ".stages").write_text(",".join(wanted))
        argv[argv.index("--stages") + 1] = "all"
    launch_opts = callgrind.Launch(no_aslr=not aslr, hash_seed=hash_seed, cache_sim=cache_sim, branch_sim=branch_sim,
                                   clean_env=clean_env, cwd=child_cwd)
    spec = callgrind.child(argv, out_dir, launch_opts)
    line, env = spec.argv, spec.env
    if host_caches:
        line = [a for a in line if not a.startswith(("--I1=", "--D1=", "--LL="))]
    env["PYTHONPATH"] = str(ROOT)
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    if os.environ.get("PERF_CALLGRIND_TRIM"):
        env["PERF_CALLGRIND_TRIM"] = "1"
    if env_pad:
        env["PROBE_PAD"] = "x" * env_pad
    if cwd:
        os.makedirs(cwd, exist_ok=True)
        if not clean_env:
            env["PWD"] = cwd
    run_cwd = spec.cwd if child_cwd is not None else cwd
    start = time.perf_counter()
    proc = subprocess.run(line, cwd=run_cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not result_file.exists():
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if not ln.startswith("==")]
        tail = "\n".join(lines[-15:])
        raise SystemExit(f"child failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(result_file.read_text())
    dumps = callgrind.read_dumps(out_dir)
    result["dumps"] = len(dumps)
    result["wall_s"] = wall
    result["config"] = {"backend": backend, "size": size, "cwd": cwd or os.getcwd(), "aslr": aslr, "hash_seed": hash_seed,
                        "env_pad": env_pad, "burn": burn, "burn_stage": burn_stage, "select": select, "calls": calls,
                        "warmup": warmup, "cache_warmup": cache_warmup, "no_fresh": no_fresh,
                        "clean_env": clean_env, "host_caches": host_caches, "fork": fork, "tunables": tunables,
                        "child_cwd": run_cwd, "root": str(ROOT), "zygote": zygote, "stages": stages}
    shutil.rmtree(out_dir, ignore_errors=True) if os.environ.get("PROBE_KEEP") is None else None
    return result


def _serve(backend: str, size: str, out_dir: str, *, stages: str, aslr: bool, hash_seed: str | None, env_pad: int,
           clean_env: bool, tunables: str, **request) -> dict:
    """Count through perf.callgrind.Server: one zygote under callgrind, a forked child per stage."""
    import kernels

    opts = callgrind.Launch(no_aslr=not aslr, hash_seed=hash_seed, clean_env=clean_env)
    base, keep = dict(os.environ), []
    if env_pad:
        base["PROBE_PAD"], keep = "x" * env_pad, [*keep, "PROBE_PAD"]
    if tunables:
        base["GLIBC_TUNABLES"], keep = tunables, [*keep, "GLIBC_TUNABLES"]
    wanted = list(kernels.STAGES) + list(STEPS) if stages == "all" else stages.split(",")
    # Everything a child imports is imported once, by the zygote: imports done in each child read
    # paths whose hashes order dicts differently (torch's loss moved 0.8% between two checkouts
    # whose paths differ in one letter, without this).
    preload = ["numpy", "kernels", "kernels.numpy_", "perf.cases"]
    preload += [] if backend == "numpy" else ["torch", "kernels.torch_"]
    result: dict = {"counts": {}, "per_call": {}, "seconds": {}, "pids": []}
    start = time.perf_counter()
    with callgrind.Server(f"{Path(__file__).resolve()}:handle", out_dir, launch=opts, preload=preload,
                          pythonpath=[ROOT], base=base, keep=keep) as server:
        for stage in wanted:
            mine = server.request({"backend": backend, "size": size, "stage": stage, **request})
            result["pids"].append(mine.pop("pid"))
            for key in ("counts", "per_call", "seconds"):
                result[key].update(mine[key])
    result["wall_s"] = time.perf_counter() - start
    result["dumps"] = len(callgrind.read_dumps(out_dir))
    result["imports_s"] = 0.0
    return result


def spread(values: list[float]) -> float:
    """(max - min) / median: the relative range across processes."""
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else 0.0


def _values(runs: list[dict], bid: str, metric: str) -> list[float]:
    return [r["counts"][bid]["per_call"][metric] for r in runs if bid in r["counts"]]


def report(runs: list[dict], base: str = "base", detect: str = "det") -> list[str]:
    """Markdown: per backend, the spread of the ``base*`` runs and how every other run differs from their median."""
    out: list[str] = []
    for backend in dict.fromkeys(r["config"]["backend"] for r in runs):
        mine = [r for r in runs if r["config"]["backend"] == backend]
        bases = [r for r in mine if r["label"].startswith(base)]
        dets = [r for r in mine if r["label"].startswith(detect)]
        others = [r for r in mine if not r["label"].startswith((base, detect, "percall"))]
        out += [f"### {backend}: {len(bases)} fresh processes ({', '.join(r['config']['cwd'] for r in bases)})", ""]
        head = "| benchmark | instructions per call | range | cycles per call | range |"
        out += [head + "".join(f" {r['label']} Ir / cyc |" for r in others),
                "|---|---:|---:|---:|---:|" + "---:|" * len(others)]
        for bid in bases[0]["counts"]:
            ir, cyc = _values(bases, bid, "instructions"), _values(bases, bid, "cycles")
            mi, mc = statistics.median(ir), statistics.median(cyc)
            cells = []
            for r in others:
                if bid in r["counts"]:
                    pc = r["counts"][bid]["per_call"]
                    cells.append(f" {pc['instructions'] / mi - 1:+.2%} / {pc['cycles'] / mc - 1:+.2%} |")
                else:
                    cells.append(" |")
            out.append(f"| {bid} | {mi:,.0f} | {spread(ir):.2%} | {mc:,.0f} | {spread(cyc):.2%} |" + "".join(cells))
        if dets:
            out += ["", f"Detection, {len(dets)} fresh processes: the changed benchmarks against the median of the "
                    "unchanged runs; 'margin' is the smallest change over the largest deviation of an unchanged run.", "",
                    "| benchmark | change | instructions: min / max change | margin | cycles: min / max change | margin |",
                    "|---|---|---:|---:|---:|---:|"]
            for bid in bases[0]["counts"]:
                changed = [r for r in dets if bid in r["counts"]]
                what = _change_label(dets[0]["config"], bid)
                if not what:
                    continue
                row = f"| {bid} | {what} |"
                for metric in ("instructions", "cycles"):
                    base_vals = _values(bases, bid, metric)
                    med = statistics.median(base_vals)
                    worst = max(abs(v / med - 1) for v in base_vals)
                    ch = [v / med - 1 for v in _values(changed, bid, metric)]
                    margin = min(abs(c) for c in ch) / worst if worst else float("inf")
                    row += f" {min(ch):+.2%} / {max(ch):+.2%} | {margin:,.0f}x |" if worst else \
                        f" {min(ch):+.2%} / {max(ch):+.2%} | (no spread) |"
                out.append(row)
        out.append("")
    return out


def _change_label(config: dict, bid: str) -> str:
    extra = dict(item.partition(":")[::2] for item in config.get("burn_stage", "").split(",") if item)
    for stage, k in extra.items():
        if f"-{stage}-" in bid:
            return f"copy of {stage} + {k or config.get('burn', 0)} loop iterations"
    if config.get("select") and "-relu_backward-" in bid:
        return "np.where" if bid.endswith("numpy") else "masked_fill"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("child")
    c.add_argument("--backend", required=True)
    c.add_argument("--size", default="seed")
    c.add_argument("--stages", default="all")
    c.add_argument("--calls", type=int, default=10)
    c.add_argument("--warmup", type=int, default=callgrind.DEFAULT_WARMUP)
    c.add_argument("--cache-warmup", type=int, default=callgrind.DEFAULT_CACHE_WARMUP)
    c.add_argument("--out", required=True)
    c.add_argument("--burn", type=int, default=0)
    c.add_argument("--burn-stage", default="")
    c.add_argument("--select", action="store_true")
    c.add_argument("--per-call", type=int, default=0)
    c.add_argument("--no-fresh", action="store_true")
    c.add_argument("--fork", action="store_true")
    c.add_argument("--zygote", action="store_true")
    la = sub.add_parser("launch")
    la.add_argument("--backend", default="numpy")
    la.add_argument("--size", default="seed")
    la.add_argument("--stages", default="all")
    la.add_argument("--calls", type=int, default=10)
    la.add_argument("--warmup", type=int, default=callgrind.DEFAULT_WARMUP)
    la.add_argument("--cache-warmup", type=int, default=callgrind.DEFAULT_CACHE_WARMUP)
    la.add_argument("--cwd")
    la.add_argument("--aslr", action="store_true", help="leave ASLR on (no setarch -R)")
    la.add_argument("--hash-seed", default="0", help="PYTHONHASHSEED, or 'random' to leave it unset")
    la.add_argument("--env-pad", type=int, default=0)
    la.add_argument("--burn", type=int, default=0)
    la.add_argument("--burn-stage", default="")
    la.add_argument("--select", action="store_true")
    la.add_argument("--per-call", type=int, default=0)
    la.add_argument("--no-fresh", action="store_true")
    la.add_argument("--fork", action="store_true", help="count every case in a process forked from one state")
    la.add_argument("--zygote", action="store_true", help="fork, then read the stage: the forking state knows no selection")
    la.add_argument("--tunables", default="", help="GLIBC_TUNABLES for the child")
    la.add_argument("--server", action="store_true", help="count through perf.callgrind.Server (a zygote, a fork per stage)")
    la.add_argument("--child-cwd", default="/", help="the child's working directory ('inherit': the --cwd one)")
    la.add_argument("--no-cache-sim", action="store_true")
    la.add_argument("--host-caches", action="store_true", help="valgrind's default: caches copied from this CPU")
    la.add_argument("--dirty-env", action="store_true", help="pass the whole environment (and PWD), not a clean one")
    la.add_argument("--out", help="append the result as one JSON line here")
    la.add_argument("--label", default="")
    t = sub.add_parser("report")
    t.add_argument("files", nargs="+")
    args = parser.parse_args()
    if args.cmd == "child":
        child(args)
    elif args.cmd == "launch":
        r = launch(args.backend, args.size, stages=args.stages, calls=args.calls, warmup=args.warmup,
                   cache_warmup=args.cache_warmup, cwd=args.cwd,
                   aslr=args.aslr, hash_seed=None if args.hash_seed == "random" else args.hash_seed,
                   env_pad=args.env_pad, burn=args.burn, burn_stage=args.burn_stage, select=args.select,
                   per_call=args.per_call, no_fresh=args.no_fresh, cache_sim=not args.no_cache_sim,
                   host_caches=args.host_caches, clean_env=not args.dirty_env, fork=args.fork, tunables=args.tunables,
                   child_cwd=None if args.child_cwd == "inherit" else args.child_cwd, zygote=args.zygote,
                   server=args.server)
        r["label"] = args.label
        r["machine"] = {"cpu": callgrind_cpu(), "python": platform.python_version()}
        if args.out:
            with open(args.out, "a", encoding="utf8") as fh:
                fh.write(json.dumps(r) + "\n")
        print(f"{args.label or args.backend}: wall {r['wall_s']:.1f} s, imports {r['imports_s']:.1f} s, "
              f"{len(r['counts'])} benchmarks, {r['dumps']} dumps")
        for bid, v in r["counts"].items():
            pc = v["per_call"]
            print(f"  {bid:32s} Ir {pc['instructions']:>14,.1f}  cyc {pc['cycles']:>14,.1f}  Bm {pc['mispredicts']:>10,.1f}  "
                  f"L1m {pc['l1_misses']:>10,.1f}  LLm {pc['ll_misses']:>8,.1f}  ovh {v['overhead']['ir']:>6,.0f}  "
                  f"{r['seconds'][bid]:.1f} s")
        for bid, singles in r["per_call"].items():
            print(f"  {bid} first calls Ir: " + ", ".join(f"{s['instructions']:,.0f}" for s in singles)
                  + " | cycles: " + ", ".join(f"{s['cycles']:,.0f}" for s in singles))
    else:
        runs = [json.loads(line) for f in args.files for line in open(f, encoding="utf8") if line.strip()]
        print("\n".join(report(runs)))


def callgrind_cpu() -> str:
    from perf.machine import cpu_model

    return cpu_model()


if __name__ == "__main__":
    main()
