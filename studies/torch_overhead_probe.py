"""Per-call overhead of the torch stages at the seed size: the forms before and after, and candidates, interleaved.

    PYTHONPATH=. python studies/torch_overhead_probe.py [--rounds 40] [--calls 200] [--size seed] [--clock thread]

For each stage, every variant is called ``--calls`` times in a block, the blocks of all variants in
a shuffled order, ``--rounds`` times, in one process with one thread: the machine's drift hits them
all alike. Prints the median time per call of each variant and its ratio to ``before`` (the stage as
it was before the overhead work, copied here literally). Candidates that are not exact are not listed.
The last table times whole steps the same way, with and without an ambient ``torch.inference_mode``.
``--clock thread`` reads the thread's CPU time (see studies/forms_probe.py) instead of the wall clock.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import kernels
from kernels import check, torch_
from kernels.backend import train_step, workspace_step
from perf.machine import pin_threads

_BELOW = -(2.0 ** -149)


def before_stages() -> dict[str, Callable]:
    """The torch stages as they were before (commit 74af8c6), literally: those that changed since."""
    def relu(h, out=None):
        return torch.relu(h) if out is None else torch.clamp_min(h, 0, out=out)

    def output(h_relu, w2, out=None):
        return torch.mm(h_relu, w2, out=out)

    def loss(y_pred, y):
        return F.mse_loss(y_pred, y, reduction="sum")

    def grad_y_pred(y_pred, y, out=None):
        return torch.sub(y_pred, y, out=out).mul_(2)

    def grad_w2(h_relu, grad_y_pred, out=None):
        return torch.mm(h_relu.t(), grad_y_pred, out=out)

    def grad_h_relu(grad_y_pred, w2, out=None):
        return torch.mm(grad_y_pred, w2.t(), out=out)

    def relu_backward(grad_h_relu, h, out=None):
        result = torch.ops.aten.threshold_backward(grad_h_relu, h, _BELOW)
        return result if out is None else out.copy_(result)

    def hidden(x, w1, out=None):
        return torch.mm(x, w1, out=out)

    def grad_w1(x, grad_h, out=None):
        return torch.mm(x.t(), grad_h, out=out)

    return {"hidden": hidden, "relu": relu, "output": output, "loss": loss, "grad_y_pred": grad_y_pred,
            "grad_w2": grad_w2, "grad_h_relu": grad_h_relu, "relu_backward": relu_backward, "grad_w1": grad_w1}


def variants(v: dict, ws) -> dict[str, dict[str, Callable[[], object]]]:
    """stage -> label -> a call with the seed's arrays: "before" and "after" (each also with out=), then candidates."""
    old = before_stages()
    t = torch_
    one = torch.ones((), dtype=v["y"].dtype)
    mse_backward = torch.ops.aten.mse_loss_backward.default
    mse_backward_out = torch.ops.aten.mse_loss_backward.grad_input
    threshold = torch.ops.aten.threshold_backward.default
    out = {"hidden": ws.h, "relu": ws.h_relu, "output": ws.y_pred, "grad_y_pred": ws.grad_y_pred, "grad_w2": ws.grad_w2,
           "grad_h_relu": ws.grad_h_relu, "relu_backward": ws.grad_h, "grad_w1": ws.grad_w1}
    args = {"hidden": ("x", "w1"), "relu": ("h",), "output": ("h_relu", "w2"), "loss": ("y_pred", "y"),
            "grad_y_pred": ("y_pred", "y"), "grad_w2": ("h_relu", "grad_y_pred"), "grad_h_relu": ("grad_y_pred", "w2"),
            "relu_backward": ("grad_h_relu", "h"), "grad_w1": ("x", "grad_h")}
    found: dict[str, dict[str, Callable[[], object]]] = {}
    for stage, names in args.items():
        a, before, after = tuple(v[n] for n in names), old[stage], getattr(t, stage)
        found[stage] = {"before": lambda f=before, a=a: f(*a), "after": lambda f=after, a=a: f(*a)}
        if stage in out:
            found[stage] |= {"before out=": lambda f=before, a=a, o=out[stage]: f(*a, out=o),
                             "after out=": lambda f=after, a=a, o=out[stage]: f(*a, out=o)}
    found["loss"]["after out=, scratch="] = lambda: t.loss(v["y_pred"], v["y"], out=ws.loss, scratch=ws.loss_scratch)
    found["loss"]["out=: sub, square_, sum"] = lambda: torch.sum(
        torch.sub(v["y_pred"], v["y"], out=ws.loss_scratch).square_(), dim=(0, 1), out=ws.loss)
    found["grad_y_pred"] |= {
        "mse_loss_backward via OpOverload": lambda: mse_backward(one, v["y_pred"], v["y"], 2),
        "out=, via OpOverload": lambda: mse_backward_out(one, v["y_pred"], v["y"], 2, grad_input=ws.grad_y_pred)}
    found["relu_backward"]["via OpOverload"] = lambda: threshold(v["grad_h_relu"], v["h"], _BELOW)
    found["output"]["out= column-major"] = lambda: torch.mm(v["h_relu"], v["w2"], out=ws.y_pred_t.t())
    found["grad_w2"]["out= column-major"] = lambda: torch.mm(v["h_relu"].t(), v["grad_y_pred"], out=ws.grad_w2_t.t())
    found["sgd_update"] = {"after (unchanged)": lambda: t.sgd_update(v["w2"], v["grad_w2"], 0.0)}
    return found


CLOCK = [time.perf_counter]


def block(call: Callable[[], object], calls: int) -> float:
    clock = CLOCK[0]
    start = clock()
    for _ in range(calls):
        call()
    return (clock() - start) / calls


def interleave(calls: dict[str, Callable[[], object]], rounds: int, n: int, modes: dict[str, object] | None = None
               ) -> dict[str, float]:
    """Median seconds per call of each label, blocks interleaved in a shuffled order every round."""
    labels = list(calls)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for label in labels:
        block(calls[label], n)  # warm-up
    for _ in range(rounds):
        random.shuffle(labels)
        for label in labels:
            mode = (modes or {}).get(label)
            if mode is None:
                times[label].append(block(calls[label], n))
            else:
                with mode():
                    times[label].append(block(calls[label], n))
    return {label: statistics.median(times[label]) for label in calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--size", default="seed")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall")
    args = parser.parse_args()
    CLOCK[0] = time.perf_counter if args.clock == "wall" else time.thread_time
    print(f"threads {pin_threads(1)}; torch {torch.__version__}; clock {args.clock}")
    problem = kernels.parse_problem(args.size)
    b = kernels.backend("torch-cpu")
    v = {k: b.asarray(a) for k, a in check.intermediates(problem).items()}
    ws = b.workspace(problem.shape)
    ws = SimpleNamespace(**ws.arrays(), y_pred_t=b.empty((problem.D_out, problem.N)),
                         grad_w2_t=b.empty((problem.D_out, problem.H)))
    print(f"\n{problem.name}: median us per call ({args.rounds} rounds of {args.calls} calls, interleaved)")
    for stage, calls in variants(v, ws).items():
        medians = interleave(calls, args.rounds, args.calls)
        base = medians.get("before", next(iter(medians.values())))
        print(f"  {stage}: " + "; ".join(f"{label} {m * 1e6:.2f} ({m / base:.2f}x)" for label, m in medians.items()))

    # Whole steps: before (the changed stages swapped back in) and after, allocating and workspace,
    # each also inside one ambient inference_mode (entered once per block, not per call).
    raw = {s: getattr(torch_, s) for s in kernels.STAGES}
    old = SimpleNamespace(**{**raw, **before_stages()})
    new = SimpleNamespace(**raw)
    inputs = {k: b.asarray(a) for k, a in problem.inputs().items()}
    params, x, y = (inputs["w1"], inputs["w2"]), inputs["x"], inputs["y"]
    real = b.workspace(problem.shape)
    steps = {
        "train_step before": lambda: train_step(old, params, x, y, 0.0),
        "train_step after": lambda: train_step(new, params, x, y, 0.0),
        "workspace_step": lambda: workspace_step(new, real, params, x, y, 0.0),
    }
    steps |= {f"{k}, inference_mode": f for k, f in steps.items()}
    modes = {k: torch.inference_mode for k in steps if k.endswith("inference_mode")}
    medians = interleave(steps, args.rounds, max(1, args.calls // 20), modes)
    base = medians["train_step before"]
    print("  steps: " + "; ".join(f"{label} {m * 1e6:.1f} ({m / base:.3f}x)" for label, m in medians.items()))


if __name__ == "__main__":
    main()
