"""Is a forked child's speed set by its zygote, or by the moment? For docs/results/fork-server.md.

    python studies/zygote_probe.py [--zygotes 5] [--rows 12]

Starts ``--zygotes`` zygotes (fresh interpreters that make the compute preset's x and grad_h, 1024 x 1024
float32, and call torch-cpu's grad_w1 and relu_backward once), then ``--rows`` times asks each in turn
for a child, one second apart: the child copies the arrays, as a measuring child binds its own, and prints
its minimum of 5 calls of ``torch.mm(x.t(), grad_h)`` and of 30 of ATen's threshold_backward, in ms. One
row is one moment, one column one zygote: levels that follow the columns are the zygote's, levels that
follow the rows the machine's. One thread.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def serve() -> None:
    """A zygote: make the data, warm up, then fork a child per line read; each prints one line."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    hx = rng.standard_normal((1024, 1024)).astype(np.float32)
    hg = rng.standard_normal((1024, 1024)).astype(np.float32)
    x, g = torch.from_numpy(hx.copy()), torch.from_numpy(hg.copy())
    torch.mm(x.t(), g)
    torch.ops.aten.threshold_backward(g, x, -1e-30)
    print("ready", flush=True)
    for _ in sys.stdin:
        pid = os.fork()
        if pid == 0:
            xx, gg = torch.from_numpy(hx.copy()), torch.from_numpy(hg.copy())
            mm, tb = [], []
            for _ in range(5):
                t = time.perf_counter()
                torch.mm(xx.t(), gg)
                mm.append(time.perf_counter() - t)
            for _ in range(30):
                t = time.perf_counter()
                torch.ops.aten.threshold_backward(gg, xx, -1e-30)
                tb.append(time.perf_counter() - t)
            print(f"{min(mm) * 1e3:.2f}/{min(tb) * 1e3:.3f}", flush=True)
            os._exit(0)
        os.waitpid(pid, 0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--zygotes", type=int, default=5)
    p.add_argument("--rows", type=int, default=12)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve()
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    zygotes = [subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=env) for _ in range(args.zygotes)]
    for z in zygotes:
        if z.stdout.readline().strip() != "ready":
            print("a zygote did not start", file=sys.stderr)
            return 2
    print("time   " + "  ".join(f"zygote {k + 1}: mm/tb ms" for k in range(args.zygotes)))
    start = time.time()
    for _ in range(args.rows):
        row = []
        for z in zygotes:
            z.stdin.write("go\n")
            z.stdin.flush()
            row.append(z.stdout.readline().strip())
        print(f"{time.time() - start:5.1f}s " + "  ".join(f"{cell:>18}" for cell in row), flush=True)
        time.sleep(1.0)
    for z in zygotes:
        z.stdin.close()
        z.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
