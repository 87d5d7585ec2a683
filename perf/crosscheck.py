"""Check this suite's clock against an independent one: torch.utils.benchmark.Timer.

    python -m perf.crosscheck --backend torch-cuda --size seed,gpu [--timer sync|events] [--out FILE.md]

For every stage that needs no per-round setup, and the roofline probes, the same call is
timed by this suite's own machinery (calibration, rounds, the device-synchronising timer of
``perf.timers``) and by torch's Timer (which synchronises CUDA itself), alternately in one
process so that machine drift hits both alike. Exit 7 (a check failed, not a regression) when
a median differs by more than the tolerance (default 10%), 2 on bad input.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import kernels

from . import machine, paths
from .cases import PROBES, Case, bind, probe_problem
from .cli import CHECK_FAILED, PASS, Parser, UsageError, run_main
from .gate import GateError, parse_threshold
from .measure import calibrate, plan, time_round
from .options import parse_sizes
from .render import format_time
from .timers import timer_for


def ours(bound, timer, seconds: float) -> float:
    """Median seconds per call, measured the way the benchmarks measure it."""
    call_s = calibrate(bound, timer, 1e-4)
    rounds, iterations = plan(call_s, min_round_s=1e-4, max_time_s=seconds, min_rounds=10, can_loop=True)
    return statistics.median(time_round(bound, timer, iterations) / iterations for _ in range(rounds))


def theirs(bound, seconds: float) -> float:
    from torch.utils.benchmark import Timer

    timer = Timer("target(*args)", globals={"target": bound.target, "args": bound.args},
                  num_threads=machine.thread_counts().get("torch", 1))
    return timer.blocked_autorange(min_run_time=seconds).median


def measure_all(backend: str, sizes, timer_mode: str, seconds: float, repeats: int) -> list[dict]:
    cases = [Case(stage, backend, p) for p in sizes for stage in kernels.STAGES if stage != "sgd_update"]
    on_host = kernels.backend(backend).device_name == "cpu"
    cases += [Case(stage, backend, probe_problem(stage, on_host, "float32")) for stage in PROBES]
    table = []
    for case in cases:
        bound = bind(case)
        why = bound.check()
        if why:
            raise UsageError(f"{case.id}: wrong result, not timed: {why}")
        timer = timer_for(bound.backend, timer_mode)
        a, b = [], []
        for _ in range(repeats):  # alternate, so that drift hits both clocks alike
            a.append(ours(bound, timer, seconds))
            b.append(theirs(bound, seconds))
        table.append({"case": case.id, "ours_s": statistics.median(a), "torch_s": statistics.median(b)})
    return table


def markdown(table: list[dict], tolerance: float, header: str) -> str:
    lines = [header, "", "| benchmark | this suite (median) | torch.utils.benchmark (median) | ratio | within |",
             "|---|---:|---:|---:|---|"]
    for r in table:
        ratio = r["ours_s"] / r["torch_s"]
        lines.append(f"| `{r['case']}` | {format_time(r['ours_s'])} | {format_time(r['torch_s'])} | {ratio:.3f} "
                     f"| {'yes' if abs(ratio - 1) <= tolerance else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_main("perf.crosscheck", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    parser = Parser(prog="python -m perf.crosscheck", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch-cpu", help="a torch backend (default torch-cpu)")
    parser.add_argument("--size", default="seed", help="sizes, as --perf-size (default seed)")
    parser.add_argument("--timer", default="sync", choices=("sync", "events"), help="this suite's device timer")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and BLAS (default 1)")
    parser.add_argument("--seconds", type=float, default=0.2, help="time per measurement and clock (default 0.2)")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the two clocks (default 3)")
    parser.add_argument("--tolerance", default="10%", help="largest accepted difference (default 10%%)")
    parser.add_argument("--out", help="also write the Markdown table here")
    args = parser.parse_args(argv)
    try:
        tolerance = parse_threshold(args.tolerance)
        sizes = parse_sizes(args.size)
        if not args.backend.startswith("torch"):
            raise kernels.UnknownNameError(f"--backend {args.backend!r}: torch's Timer needs a torch backend")
        kernels.backend(args.backend)
    except (kernels.KernelError, GateError) as exc:
        raise UsageError(str(exc)) from None
    threads = machine.pin_threads(args.threads)
    table = measure_all(args.backend, sizes, args.timer, args.seconds, args.repeats)
    fp = machine.fingerprint()
    header = (f"Cross-check of {args.backend} ({fp.get('gpus') or fp['cpu']}), torch {fp['torch']}, threads {threads}, "
              f"timer {args.timer}; tolerance {tolerance:.0%}. Command: python -m perf.crosscheck "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}")
    text = markdown(table, tolerance, header)
    print(text)
    if args.out:
        with paths.writing("--out", args.out, "the cross-check"):
            Path(args.out).write_text(text)
    return PASS if all(abs(r["ours_s"] / r["torch_s"] - 1) <= tolerance for r in table) else CHECK_FAILED


if __name__ == "__main__":
    sys.exit(main())
