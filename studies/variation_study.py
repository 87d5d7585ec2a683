"""What the process-to-process variation of a benchmark is made of (issue 12): can blocks of rounds with the
case's arrays re-allocated inside one process sample it, or does it take fresh processes?

    python studies/variation_study.py --processes 16 --aslr-off 8 --blocks 8 --rounds 100 --out /tmp/pv.json
    python studies/variation_study.py --analyse /tmp/pv.json     # the tables again, from the raw data

Fresh worker processes (this script with ``--worker``) run one after the other; ``--aslr-off`` more of
them run under ``setarch -R`` (address-space randomisation off: every process gets the same layout),
interleaved with the others so that drift of the machine hits both kinds alike. Each worker pins
threads to 1, binds and checks every case of the preset (every stage and train_step, per backend),
calibrates it as ``perf.measure.run`` does, and then measures B blocks of R rounds per case and
condition, in an order shuffled per block so that drift in time does not pass for a block effect:

- ``same``: the case's first binding, never re-bound (the control: what one ``pytest perf`` process
  does, cut into blocks);
- ``rebind``: ``perf.cases.bind`` again before the block: fresh device arrays;
- ``shift``: first gc, ``malloc_trim`` and two dummy buffers of random size (one on the heap, one
  large enough to be mapped), kept alive, then a fresh binding: its addresses surely move.

Every round is timed with ``perf.measure.time_round`` (seconds per call are recorded); two
warm-up rounds precede each block. The analysis (pure functions below) splits the log of a
per-block statistic (minimum or median of its rounds) into between-process and
between-block-within-process components per condition, looks for two levels, and asks how many
processes a gate would need. Measured numbers go to docs/results/process-variation.md.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: perf and kernels come from this checkout

CONDITIONS = ("same", "rebind", "shift")
WARMUP_ROUNDS = 2
MIN_TIME_S = 1e-4  # pyproject's --benchmark-min-time: perf.measure's shortest round
TOLERANCE = 0.05   # the gate's default threshold
Z95 = 1.959964


class StudyError(Exception):
    """A usage or environment error: one line, exit status 2."""


# --------------------------------------------------------------------------- worker


def _address(bound) -> int:
    """Data address of the first array the timed call reads."""
    args = bound.setup()[0] if bound.setup else bound.args
    a = args[0]
    return int(a.data_ptr()) if hasattr(a, "data_ptr") else int(a.ctypes.data)


def _current_cpu() -> int:
    with open("/proc/self/stat", encoding="ascii") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[36])  # field 39, "processor"


def _runnable() -> int:
    """Tasks runnable on the machine now, this one included (/proc/loadavg's fourth field)."""
    with open("/proc/loadavg", encoding="ascii") as fh:
        return int(fh.read().split()[3].split("/")[0])


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def worker(backends: Sequence[str], size: str, blocks: int, rounds: int, seed: int) -> dict:
    """Measure every case of ``size`` on ``backends``: blocks x conditions, shuffled; raw seconds per call."""
    started = time.perf_counter()
    import numpy as np

    from kernels import PRESETS, STAGES
    from perf.cases import Case, bind
    from perf.machine import pin_threads
    from perf.measure import calibrate, plan, time_round, timer_overhead
    from perf.timers import perf_counter

    threads = pin_threads(1)
    problem = PRESETS[size]
    cases = [Case(stage, backend, problem) for backend in backends for stage in (*STAGES, "train_step")]
    timer = perf_counter
    min_round_s = max(MIN_TIME_S, 100 * timer_overhead(timer))
    first, iterations = {}, {}
    for case in cases:
        bound = bind(case)
        why = bound.check()
        if why:
            raise StudyError(f"{case.id} computes wrongly: {why}")
        call_s = calibrate(bound, timer, min_round_s)
        iterations[case.id] = plan(call_s, min_round_s=min_round_s, max_time_s=0.5, min_rounds=10,
                                   can_loop=bound.setup is None)[1]
        first[case.id] = bound
    rng = random.Random(seed)
    dummies: dict[str, tuple] = {}
    out: dict[str, dict] = {c.id: {"iterations": iterations[c.id], "blocks": []} for c in cases}
    t0 = time.perf_counter()
    measuring_from = t0 - started
    for block in range(blocks):
        order = [(condition, case) for condition in CONDITIONS for case in cases]
        rng.shuffle(order)
        for condition, case in order:
            if condition == "same":
                bound = first[case.id]
            else:
                if condition == "shift":
                    dummies.pop(case.id, None)
                    gc.collect()
                    _malloc_trim()
                    dummies[case.id] = (np.empty(rng.randrange(64, 1 << 16), np.uint8),
                                        np.empty(rng.randrange(1 << 18, 1 << 22), np.uint8))
                bound = bind(case)
            n = iterations[case.id]
            for _ in range(WARMUP_ROUNDS):
                time_round(bound, timer, n)
            t, cpu, runnable = time.perf_counter() - t0, _current_cpu(), _runnable()
            samples = [time_round(bound, timer, n) / n for _ in range(rounds)]
            out[case.id]["blocks"].append({"condition": condition, "block": block, "t": round(t, 3),
                                           "address": _address(bound), "cpu": [cpu, _current_cpu()],
                                           "runnable": [runnable, _runnable()], "rounds": samples})
    return {"threads": threads, "startup_s": measuring_from, "measure_s": time.perf_counter() - t0,
            "benchmarks": out}


# --------------------------------------------------------------------------- the study


def cpu_times() -> tuple[int, int, int]:
    """(total, idle incl. iowait, steal) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total, fields[3] + fields[4], fields[7]


def worker_command(opts: argparse.Namespace, seed: int, aslr_off: bool) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--seed", str(seed),
           "--backends", opts.backends, "--size", opts.size, "--blocks", str(opts.blocks), "--rounds", str(opts.rounds)]
    return ["setarch", platform.machine(), "-R", *cmd] if aslr_off else cmd


def process_order(normal: int, aslr_off: int) -> list[bool]:
    """Which processes run with ASLR off, spread evenly through the run (True = off)."""
    total = normal + aslr_off
    return [int((i + 1) * aslr_off / total) > int(i * aslr_off / total) for i in range(total)]


def run_study(opts: argparse.Namespace) -> dict:
    if opts.aslr_off and not shutil.which("setarch"):
        raise StudyError("--aslr-off needs setarch (util-linux)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    processes = []
    began = time.time()
    order = process_order(opts.processes, opts.aslr_off)
    for i, aslr_off in enumerate(order):
        load_before, cpu_before, wall = os.getloadavg(), cpu_times(), time.perf_counter()
        done = subprocess.run(worker_command(opts, opts.seed + i, aslr_off), capture_output=True, text=True, env=env)
        wall = time.perf_counter() - wall
        cpu_after, load_after = cpu_times(), os.getloadavg()
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise StudyError(f"worker {i} failed (exit {done.returncode}): {tail}")
        result = json.loads(done.stdout)
        total = max(cpu_after[0] - cpu_before[0], 1)
        result.update({"index": i, "aslr_off": aslr_off, "wall_s": wall, "load_before": load_before,
                       "load_after": load_after, "busy": 1 - (cpu_after[1] - cpu_before[1]) / total,
                       "steal": (cpu_after[2] - cpu_before[2]) / total})
        processes.append(result)
        print(f"process {i + 1}/{len(order)}{' (ASLR off)' if aslr_off else ''}: {wall:.1f} s, "
              f"load {load_before[0]:.2f} -> {load_after[0]:.2f}, CPUs busy {result['busy']:.0%}", file=sys.stderr)
    meta = {"started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(began)), "minutes": (time.time() - began) / 60,
            "command": " ".join(["python", "studies/variation_study.py", *sys.argv[1:]]),
            "machine": machine(), "backends": opts.backends, "size": opts.size, "blocks": opts.blocks,
            "rounds": opts.rounds, "processes": opts.processes, "aslr_off": opts.aslr_off}
    return {"meta": meta, "processes": processes}


def machine() -> str:
    from perf.machine import cpu_model

    system = f"{platform.system()} {platform.release()}"
    return f"{cpu_model()}, {os.cpu_count()} CPUs, {system}, Python {platform.python_version()}"


# --------------------------------------------------------------------------- analysis (pure)


def log_stat(rounds: Sequence[float], statistic: str) -> float:
    """log of a block's minimum or median."""
    return math.log(min(rounds) if statistic == "min" else statistics.median(rounds))


def nested_sds(groups: Sequence[Sequence[float]]) -> tuple[float, float]:
    """(between-group sd, within-group sd) of a one-way random-effects layout, by the method of moments.

    Within: the pooled sd of the values about their group's mean. Between: the sd of the group
    means less what the within-group spread alone puts into them (0 when that is all there is).
    """
    groups = [list(g) for g in groups if len(g) >= 1]
    if len(groups) < 2:
        raise ValueError("nested_sds needs at least two groups")
    df = sum(len(g) - 1 for g in groups)
    ss = sum((v - statistics.fmean(g)) ** 2 for g in groups for v in g)
    within_var = ss / df if df else 0.0
    n_mean = statistics.fmean(len(g) for g in groups)
    between_var = statistics.variance([statistics.fmean(g) for g in groups]) - within_var / n_mean
    return math.sqrt(max(between_var, 0.0)), math.sqrt(within_var)


def robust_sd(values: Sequence[float]) -> float:
    """1.4826 x the median absolute deviation: the sd of normal data, blind to a few outliers."""
    m = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - m) for v in values)


def two_means(values: Sequence[float]) -> tuple[float, float, float, float]:
    """The best split of 1-D ``values`` into two clusters: (cut, low mean, high mean, share of variance explained).

    Normal data give a share of about 0.64; two well-separated levels approach 1.
    """
    xs = sorted(values)
    n = len(xs)
    if n < 2 or xs[0] == xs[-1]:
        return xs[0], xs[0], xs[-1], 0.0
    total = sum((x - statistics.fmean(xs)) ** 2 for x in xs)
    best = None
    for k in range(1, n):
        lo, hi = xs[:k], xs[k:]
        ml, mh = statistics.fmean(lo), statistics.fmean(hi)
        within = sum((x - ml) ** 2 for x in lo) + sum((x - mh) ** 2 for x in hi)
        if best is None or within < best[0]:
            best = (within, (xs[k - 1] + xs[k]) / 2, ml, mh)
    within, cut, ml, mh = best
    return cut, ml, mh, 1 - within / total


def mixed_groups(groups: Sequence[Sequence[float]], cut: float) -> int:
    """How many groups have values on both sides of ``cut``."""
    return sum(1 for g in groups if min(g) < cut < max(g))


def flag_effect(rows: Sequence[tuple[object, bool, float]]) -> float | None:
    """Mean of (value - its group's mean) where the flag is set, less the same where it is not.

    ``rows`` are (group, flag, value); centring on the group removes what differs between groups
    (process, condition), so that what is left is the flag's own effect. None when a side is empty.
    """
    groups: dict[object, list[float]] = {}
    for g, _, v in rows:
        groups.setdefault(g, []).append(v)
    means = {g: statistics.fmean(vs) for g, vs in groups.items()}
    on = [v - means[g] for g, f, v in rows if f]
    off = [v - means[g] for g, f, v in rows if not f]
    return statistics.fmean(on) - statistics.fmean(off) if on and off else None


def processes_needed(sd: float, tolerance: float = TOLERANCE, z: float = Z95, sides: int = 1) -> int:
    """Processes per side for the mean of log values to lie within +-``tolerance`` (z-level).

    sides=1: estimate one level; sides=2: a baseline of P against a current run of P (the
    difference of two means, sd x sqrt(2/P)).
    """
    return max(1, math.ceil(sides * (z * sd / math.log(1 + tolerance)) ** 2))


def split_floor(values: Sequence[float], p: int, aggregate: Callable[[Sequence[float]], float],
                draws: int = 2000, seed: int = 0, quantile: float = 0.95) -> float:
    """The ``quantile`` of |log ratio| between two disjoint random sets of ``p`` of ``values`` (logs).

    An A/A comparison of unchanged code: a gate whose threshold is below this would cry wolf on
    more than 1 - quantile of such comparisons of this benchmark.
    """
    if 2 * p > len(values):
        raise ValueError(f"split_floor: {len(values)} values cannot make two disjoint sets of {p}")
    rng = random.Random(seed)
    gaps = []
    for _ in range(draws):
        picked = rng.sample(list(values), 2 * p)
        gaps.append(abs(aggregate(picked[:p]) - aggregate(picked[p:])))
    gaps.sort()
    return gaps[min(len(gaps) - 1, math.ceil(quantile * len(gaps)) - 1)]


def smallest_p(values: Sequence[float], aggregate: Callable[[Sequence[float]], float],
               tolerance: float = TOLERANCE, **kw) -> int | None:
    """The fewest processes per side whose A/A floor stays within ``tolerance``; None if even half of them do not."""
    for p in range(1, len(values) // 2 + 1):
        if split_floor(values, p, aggregate, **kw) <= math.log(1 + tolerance):
            return p
    return None


def block_gaps(groups: Sequence[Sequence[float]], n: int, across: bool, aggregate: Callable[[Sequence[float]], float] = min,
               draws: int = 2000, seed: int = 0) -> list[float]:
    """|log ratio| of ``aggregate`` over ``n`` blocks per side, in random A/A draws, sorted; ``groups``: per
    process, the log statistics of its blocks.

    across=True: each side takes one block from each of ``n`` processes of its own (more processes);
    across=False: each side takes ``n`` blocks of one process (more blocks in one process).
    """
    if across and 2 * n > len(groups):
        raise ValueError(f"block_floor: {len(groups)} processes cannot give two sides {n} each")
    if not across and (len(groups) < 2 or n > min(len(g) for g in groups)):
        raise ValueError(f"block_floor: need 2 processes of at least {n} blocks")
    rng = random.Random(seed)
    gaps = []
    for _ in range(draws):
        if across:
            picked = [rng.choice(list(g)) for g in rng.sample(list(groups), 2 * n)]
            a, b = picked[:n], picked[n:]
        else:
            ga, gb = rng.sample(list(groups), 2)
            a, b = rng.sample(list(ga), n), rng.sample(list(gb), n)
        gaps.append(abs(aggregate(a) - aggregate(b)))
    return sorted(gaps)


def block_floor(groups: Sequence[Sequence[float]], n: int, across: bool, aggregate: Callable[[Sequence[float]], float] = min,
                draws: int = 2000, seed: int = 0, quantile: float = 0.95) -> float:
    """The A/A floor: the ``quantile`` of ``block_gaps``; a threshold below it cries wolf more often than 1 - quantile."""
    gaps = block_gaps(groups, n, across, aggregate, draws, seed)
    return gaps[min(len(gaps) - 1, math.ceil(quantile * len(gaps)) - 1)]


def lag1(values: Sequence[float]) -> float:
    """Lag-1 autocorrelation: near 0 when neighbours in time are unrelated, near 1 when states persist."""
    m = statistics.fmean(values)
    total = sum((v - m) ** 2 for v in values)
    return sum((a - m) * (b - m) for a, b in zip(values, values[1:])) / total if total else 0.0


def timeline(process: dict, slow: float = 0.15) -> tuple[float, float]:
    """(share of blocks more than ``slow`` above their benchmark's fastest block in this process, lag-1
    autocorrelation of that excess in time order across all benchmarks): is slowness a state of the moment?"""
    excess = []
    for bench in process["benchmarks"].values():
        floor = min(min(b["rounds"]) for b in bench["blocks"])
        excess += [(b["t"], math.log(min(b["rounds"]) / floor)) for b in bench["blocks"]]
    excess.sort()
    values = [e for _, e in excess]
    return statistics.fmean(1.0 if e > math.log(1 + slow) else 0.0 for e in values), lag1(values)


# --------------------------------------------------------------------------- summary and tables


def blocks_of(process: dict, name: str, condition: str) -> list[list[float]]:
    return [b["rounds"] for b in process["benchmarks"][name]["blocks"] if b["condition"] == condition]


def neighbour_and_cpu(procs: Sequence[dict], name: str, statistic: str) -> tuple[float | None, float | None, float]:
    """(effect of another task being runnable at a block's start or end, effect of CPU 1 against CPU 0,
    share of blocks with another task runnable), effects as log ratios within (process, condition)."""
    busy, cpu = [], []
    for p in procs:
        for b in p["benchmarks"][name]["blocks"]:
            key, v = (p["index"], b["condition"]), log_stat(b["rounds"], statistic)
            busy.append((key, max(b["runnable"]) >= 2, v))
            if b["cpu"][0] == b["cpu"][1]:
                cpu.append((key, b["cpu"][0] == 1, v))
    return flag_effect(busy), flag_effect(cpu), statistics.fmean(f for _, f, _ in busy)


def summarise(data: dict, statistic: str = "min") -> list[dict]:
    """One row per benchmark: the components of variance and what a gate would need."""
    procs = [p for p in data["processes"] if not p["aslr_off"]]
    fixed = [p for p in data["processes"] if p["aslr_off"]]
    names = list(procs[0]["benchmarks"])
    rows = []
    for name in names:
        row: dict = {"name": name}
        for condition in CONDITIONS:
            groups = [[log_stat(b, statistic) for b in blocks_of(p, name, condition)] for p in procs]
            row[f"proc_{condition}"], row[f"block_{condition}"] = nested_sds(groups)
        same = [[log_stat(b, statistic) for b in blocks_of(p, name, "same")] for p in procs]
        # Per process, its re-bound blocks of both kinds (rebind and shift) together.
        rebound = [[log_stat(b, statistic) for c in ("rebind", "shift") for b in blocks_of(p, name, c)] for p in procs]
        row["within_block"] = statistics.median(robust_sd([math.log(v) for v in b])
                                                for p in procs for b in blocks_of(p, name, "same"))
        row["ratio"] = row["proc_same"] / max(row["block_rebind"], 1e-9)
        # Two levels: clusters of all blocks' statistics; processes whose re-bound blocks straddle the cut.
        cut, low, high, share = two_means([v for g in same + rebound for v in g])
        row.update({"levels": math.exp(high - low), "share": share, "mixed_same": mixed_groups(same, cut),
                    "mixed_rebound": mixed_groups(rebound, cut), "n": len(procs)})
        row["busy_effect"], row["cpu_effect"], row["busy_share"] = neighbour_and_cpu(procs, name, statistic)
        # The per-process statistic over all its rounds of the 'same' condition, as one pytest run gives it.
        for stat in ("min", "median"):
            per = [log_stat([r for b in blocks_of(p, name, "same") for r in b], stat) for p in procs]
            row[f"pp_{stat}_sd"] = statistics.stdev(per)
            row[f"pp_{stat}_range"] = math.exp(max(per) - min(per))
            row[f"pp_{stat}_p_mean"] = smallest_p(per, statistics.fmean)
            row[f"pp_{stat}_p_min"] = smallest_p(per, min)
            row[f"pp_{stat}_per"] = per
        row["need_est"] = processes_needed(row["pp_min_sd"])
        row["need_gate"] = processes_needed(row["pp_min_sd"], sides=2)
        # One process per side, blocks re-bound inside it (design 2): the A/A floor between processes.
        per_rebound = [statistics.fmean(g) for g in rebound]
        row["design2_floor"] = split_floor(per_rebound, 1, statistics.fmean)
        # The minimum over n blocks per side: n blocks from n processes, n blocks of one process, n re-bound ones.
        row["floors"] = {}
        for n in (1, 2, 3, 4, 6, 8):
            if 2 * n <= len(procs):
                one_process = n <= min(len(g) for g in same)
                row["floors"][n] = (block_floor(same, n, True), block_floor(same, n, False) if one_process else None,
                                    block_floor(rebound, n, False) if one_process else None)
        n_max = max(row["floors"])  # the same windows averaged instead: the slow ones count too
        row["mean_floor"] = (n_max, block_floor(same, n_max, True, aggregate=statistics.fmean))
        gaps = block_gaps(same, n_max, True)
        row["past_threshold"] = sum(g > math.log(1 + TOLERANCE) for g in gaps) / len(gaps)
        # Fewer rounds per process: the spread of the per-process minimum over the first n rounds.
        row["pp_min_sd_by_rounds"] = {}
        for n in (10, 30, 100, 300, 1000):
            firsts = [[r for b in blocks_of(p, name, "same") for r in b][:n] for p in procs]
            if all(len(f) == n for f in firsts):
                row["pp_min_sd_by_rounds"][n] = statistics.stdev(log_stat(f, "min") for f in firsts)
        if len(fixed) >= 2:
            per_fixed = [log_stat([r for b in blocks_of(p, name, "same") for r in b], "min") for p in fixed]
            row["aslr_off_sd"] = statistics.stdev(per_fixed)
            row["aslr_off_range"] = math.exp(max(per_fixed) - min(per_fixed))
        rows.append(row)
    return rows


def address_spread(data: dict, condition: str) -> tuple[float, float]:
    """(distinct addresses per block, mean distinct page offsets per process and benchmark) of the first
    array the timed call reads, over the blocks of ``condition``: did re-binding move the arrays?"""
    distinct, offsets = [], []
    for p in data["processes"]:
        for bench in p["benchmarks"].values():
            addresses = [b["address"] for b in bench["blocks"] if b["condition"] == condition]
            distinct.append(len(set(addresses)) / len(addresses))
            offsets.append(len({a % 4096 for a in addresses}))
    return statistics.fmean(distinct), statistics.fmean(offsets)


def _ratio(log_ratio: float | None) -> str:
    return "-" if log_ratio is None else f"{math.exp(log_ratio):.2f}x"


def _p(v: int | None) -> str:
    return "-" if v is None else str(v)


def render(data: dict) -> str:
    """The Markdown tables of docs/results/process-variation.md."""
    meta, procs = data["meta"], data["processes"]
    lines = [f"Machine: {meta['machine']}. Started {meta['started_utc']} UTC, {meta['minutes']:.1f} min.",
             f"Command: `{meta['command']}`", ""]
    lines += ["| process | ASLR | wall s | load before -> after (1 min) | CPUs busy | steal | slow blocks (>15%) | "
              "lag-1 corr. of slowness |", "|---|---|---|---|---|---|---|---|"]
    for p in procs:
        share, corr = timeline(p)
        lines.append(f"| {p['index'] + 1} | {'off' if p['aslr_off'] else 'on'} | {p['wall_s']:.1f} | "
                     f"{p['load_before'][0]:.2f} -> {p['load_after'][0]:.2f} | {p['busy']:.0%} | {p['steal']:.1%} | "
                     f"{share:.0%} | {corr:.2f} |")
    moved = "; ".join(f"{c}: {d:.0%} distinct, {o:.1f} page offsets" for c in CONDITIONS for d, o in [address_spread(data, c)])
    lines += ["", f"Address of the timed call's first array, per block ({meta['blocks']} blocks per condition): {moved}."]
    for statistic in ("min", "median"):
        rows = summarise(data, statistic)
        n = rows[0]["n"]
        lines += ["", f"### Block statistic: {statistic} of the block's rounds (sd of logs; {n} processes with ASLR on)", "",
                  "| benchmark | between processes | between blocks: same | rebind | shift | within block | "
                  "process / rebind | two levels (ratio, share) | processes with both levels: same, re-bound | "
                  "other task runnable (share of blocks): effect | CPU 1 / CPU 0 |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['name']} | {r['proc_same']:.3f} | {r['block_same']:.3f} | {r['block_rebind']:.3f} | "
                         f"{r['block_shift']:.3f} | {r['within_block']:.3f} | {r['ratio']:.1f} | "
                         f"{r['levels']:.2f}x, {r['share']:.2f} | {r['mixed_same']}, {r['mixed_rebound']} of {n} | "
                         f"({r['busy_share']:.0%}) {_ratio(r['busy_effect'])} | {_ratio(r['cpu_effect'])} |")
    rows = summarise(data, "min")
    counts = sorted(rows[0]["pp_min_sd_by_rounds"])
    aslr = "aslr_off_sd" in rows[0]
    lines += ["", "### Per-process statistic over all the process's `same` rounds", "",
              "| benchmark | min: sd, max/min | median: sd, max/min | P for +-5% (1 side; gate 2 sides) | "
              "A/A P, mean of min | A/A P, min of min | A/A P, mean of median | design 2 floor | "
              + " | ".join(f"sd of min of {c} rounds" for c in counts)
              + (" | ASLR off: sd, max/min of min |" if aslr else " |"),
              "|---" * (8 + len(counts) + aslr) + "|"]
    for r in rows:
        cells = [r["name"], f"{r['pp_min_sd']:.3f}, {r['pp_min_range']:.2f}x",
                 f"{r['pp_median_sd']:.3f}, {r['pp_median_range']:.2f}x",
                 f"{r['need_est']}; {r['need_gate']}", _p(r["pp_min_p_mean"]), _p(r["pp_min_p_min"]),
                 _p(r["pp_median_p_mean"]), f"{math.exp(r['design2_floor']) - 1:.1%}"]
        cells += [f"{r['pp_min_sd_by_rounds'][c]:.3f}" for c in counts]
        if aslr:
            cells.append(f"{r['aslr_off_sd']:.3f}, {r['aslr_off_range']:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    ns = sorted(rows[0]["floors"])
    lines += ["", "### A/A floor of the minimum over n blocks per side (95% of |ratio - 1|): "
              "n processes one block each / one process n blocks / one process n re-bound blocks "
              "(- : fewer blocks per process)", "",
              "| benchmark | " + " | ".join(f"n = {n}" for n in ns) + f" | n = {ns[-1]} processes, mean instead of min | "
              f"n = {ns[-1]} processes: A/A draws past 5% |", "|---" * (3 + len(ns)) + "|"]
    for r in rows:
        cells = [" / ".join("-" if f is None else f"{math.exp(f) - 1:.1%}" for f in r["floors"][n]) for n in ns]
        cells += [f"{math.exp(r['mean_floor'][1]) - 1:.1%}", f"{r['past_threshold']:.1%}"]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    lines += ["", f"Expected benchmarks past 5% per A/A comparison of the whole suite (min over n = {ns[-1]} processes): "
              f"{sum(r['past_threshold'] for r in rows):.2f} of {len(rows)}."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise StudyError(f"{message} (see studies/variation_study.py --help)")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = _Parser(prog="studies/variation_study.py", allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=positive, default=12, help="fresh processes with ASLR on (default 12)")
    p.add_argument("--aslr-off", type=int, default=0, help="more processes under setarch -R (default 0)")
    p.add_argument("--blocks", type=positive, default=6, help="blocks per case and condition (default 6)")
    p.add_argument("--rounds", type=positive, default=30, help="rounds per block (default 30)")
    p.add_argument("--backends", default="numpy,torch-cpu")
    p.add_argument("--size", default="seed", help="a preset (default seed)")
    p.add_argument("--seed", type=int, default=1, help="seeds the block orders and dummy sizes")
    p.add_argument("--out", help="write the raw data (JSON) here")
    p.add_argument("--analyse", metavar="JSON", help="render the tables of a saved study; measure nothing")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.aslr_off < 0:
        raise StudyError(f"--aslr-off: expected 0 or more, got {opts.aslr_off}")
    if opts.processes < 3:
        raise StudyError(f"--processes: at least 3 are needed to split them, got {opts.processes}")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
        if opts.worker:
            json.dump(worker(opts.backends.split(","), opts.size, opts.blocks, opts.rounds, opts.seed), sys.stdout)
            return 0
        if opts.analyse:
            try:
                data = json.loads(Path(opts.analyse).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise StudyError(f"cannot read {opts.analyse}: {e}") from None
        else:
            data = run_study(opts)
            if opts.out:
                Path(opts.out).write_text(json.dumps(data), encoding="utf-8")
        print(render(data))
        return 0
    except StudyError as e:
        print(f"variation_study: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
