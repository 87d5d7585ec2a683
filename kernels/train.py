"""The tutorial's training loop on any backend and problem.

    python -m kernels.train --backend torch-cpu --steps 500 [--size seed] [--dtype float32]

Prints the loss every ``--every`` steps and the mean time per step. The loss is read from the
device only when printed, so the steps in between run without a host synchronisation.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import KernelError, backend, parse_problem
from .backend import train_step
from .problem import DEFAULT_DTYPE, DTYPES, PRESETS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.train", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", help="backend name, e.g. numpy, torch-cpu, torch-cuda:1 (default numpy)")
    parser.add_argument("--size", default="seed", help=f"preset ({', '.join(PRESETS)}) or N,D_in,H,D_out (default seed)")
    parser.add_argument("--dtype", default=DEFAULT_DTYPE, choices=DTYPES)
    parser.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    parser.add_argument("--every", type=int, default=100, help="print the loss every this many steps (default 100)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the problem's)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.every < 1:
        parser.error("--steps and --every must be positive integers")
    try:
        problem = parse_problem(args.size, args.dtype)
        b = backend(args.backend, args.dtype)
        b.check_fits(problem)  # before anything of that size is allocated
        lr = problem.lr if args.lr is None else args.lr
        inputs = {k: b.asarray(v) for k, v in problem.inputs().items()}
        params, x, y = (inputs["w1"], inputs["w2"]), inputs["x"], inputs["y"]
        lr = b.check_step(params, x, y, lr)
    except KernelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{b.name} on {b.device_name}, {problem.name} (N, D_in, H, D_out = {problem.shape}), {b.dtype}, lr {lr:g}")
    b.synchronize()
    start = time.perf_counter()
    for t in range(1, args.steps + 1):
        loss = train_step(b.raw, params, x, y, lr)
        if t % args.every == 0 or t == args.steps:
            print(f"step {t:>6}  loss {float(loss):.6g}")
    b.synchronize()
    elapsed = time.perf_counter() - start
    print(f"{elapsed / args.steps * 1e3:.4f} ms per step ({args.steps} steps, {elapsed:.3f} s, including the loss reads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
