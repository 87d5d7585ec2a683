"""The report as Markdown: sources and machines, one table per size (per metric) with, where a time table holds the
workspace step, its graph or out= forms, the forms of the step and their targets, then peaks, crossovers, figures.

Times and counts go through ``perf.render.format_value`` (the suite's one time formatter);
the speedup, share and rate formats are the report's own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from kernels.problem import DEFAULT_DTYPE, STEP_FORMS

from .. import forms
from ..forms import Check, Target
from ..metric import Metric
from ..render import format_share, format_time, format_value, md_escape
from .load import NOISY_IQR, Entry, Merged, shape_text
from .tables import DEFAULT_BASELINE, STEP, Cell, Crossover, Table, kind, order_backends, shows_forms, step_forms

FORM_LABELS = {"tutorial_step": "tutorial_step (the tutorial's code)", "train_step": "train_step (allocating)",
               "workspace_step": "workspace_step (out= stages, one workspace)",
               "graph_step": "graph_step (CUDA graph of the workspace step)"}
MET, MISSED = "✓", "✗"


def format_speedup(ratio: float) -> str:
    """0.0052 -> '0.0052x', 0.8 -> '0.80x', 2 -> '2.00x', 45.5 -> '45.5x', 150.2 -> '150x'."""
    if ratio < 1:
        return f"{ratio:#.2g}x"
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x" if ratio < 100 else f"{ratio:.0f}x"


def format_rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}" if value >= 1000 else f"{value:.3g} {unit}"


def format_cell(cell: Cell | None, baseline_column: bool) -> str:
    """'140 µs · 1.52x · 12% peak' ('†' after the value when noisy); the baseline's own column has no speedup."""
    if cell is None:
        return "—"
    parts = [format_value(cell.result.median, cell.result.metric) + (" †" if cell.result.noisy else "")]
    if cell.speedup is not None and not baseline_column:
        parts.append(format_speedup(cell.speedup))
    if cell.result.in_cache:
        parts.append("in cache")  # its share of the memory's bandwidth would mean little (can pass 100%)
    elif cell.share is not None:
        parts.append(f"{format_share(cell.share)} peak")
    return " · ".join(parts)


def describe_fingerprint(fp: Mapping, short: bool = False) -> str:
    """'AMD EPYC, 2 CPUs; GPU: ...; numpy 2.4.6 (openblas ...), torch 2.13.0+cpu; threads ...' from a fingerprint."""
    cpu = str(fp.get("cpu") or "unknown CPU")
    if fp.get("cpus"):
        cpu += f" ({fp['cpus']} CPUs)"
    gpus = [str(g) for g in fp.get("gpus") or []]
    hardware = cpu + (f" + {', '.join(dict.fromkeys(gpus))}" if gpus else "")
    libraries = []
    if fp.get("numpy"):
        blas = ", ".join(map(str, fp.get("blas") or []))
        libraries.append(f"numpy {fp['numpy']}" + (f" ({blas})" if blas and not short else ""))
    if fp.get("torch"):
        libraries.append(f"torch {fp['torch']}")
    if fp.get("cuda") and not short:
        libraries.append(f"CUDA {fp['cuda']}" + (f", driver {fp['gpu_driver']}" if fp.get("gpu_driver") else ""))
    if fp.get("python") and not short:
        libraries.append(f"Python {fp['python']}")
    threads = fp.get("threads") if isinstance(fp.get("threads"), Mapping) else {}
    counts = set(threads.values())
    if len(counts) == 1:
        n = counts.pop()
        libraries.append(f"{n} thread{'s' if n != 1 else ''}" + ("" if short else f" ({', '.join(threads)})"))
    elif threads:
        libraries.append("threads " + ", ".join(f"{k}={v}" for k, v in threads.items()))
    return "; ".join([hardware, ", ".join(libraries)] if libraries else [hardware])


def gpu_name(result: Entry) -> str | None:
    """The name of the CUDA device an entry ran on, from its file's fingerprint ('cuda:1' -> gpus[1])."""
    family, _, index = result.device.partition(":")
    gpus = result.source.fingerprint.get("gpus") or []
    i = int(index) if index.isdigit() else 0
    return str(gpus[i]) if family == "cuda" and i < len(gpus) else None


def device_label(result: Entry) -> str:
    """The device an entry ran on, with the GPU's name where known: 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    name = gpu_name(result)
    return f"{result.device} ({name})" if name else result.device


def render_markdown(merged: Merged, tables: Sequence[Table], races: Sequence[Crossover], *,
                    figures: Sequence[str] = (), command: str = "") -> str:
    """The whole report as Markdown: sources and machines, one table per size, peaks, crossovers, figures."""
    lines = ["# Performance report: time per call, by stage and backend", ""]
    if command:
        lines += [f"Made by `{command}`.", ""]
    lines += ["## Sources", ""]
    for s in merged.sources:
        when = ", ".join(x for x in (s.datetime.replace("T", " ")[:19], f"commit {s.commit}" if s.commit else "") if x)
        what = describe_fingerprint(s.fingerprint)
        lines.append(f"{s.index + 1}. `{s.path}`" + (f" ({when})" if when else "") + f": {what}")
    if len(merged.sources) > 1:
        lines += ["", "Where files overlap (same size, dtype, backend and stage), the file named later wins."]
    lines += _replacements(merged.replaced)
    lines += [f"- note: {n}" for n in merged.notes]
    lines += ["", "| backend | device | results from |", "|---|---|---|"]
    for backend in order_backends(r.backend for r in merged.results.values()):
        rs = [r for r in merged.results.values() if r.backend == backend]
        devices = ", ".join(dict.fromkeys(device_label(r) for r in rs))
        files = ", ".join(f"`{s}`" for s in dict.fromkeys(r.source.path for r in sorted(rs, key=lambda r: r.source.index)))
        lines.append(f"| {md_escape(backend)} | {md_escape(devices)} | {md_escape(files)} |")
    baseline = tables[0].baseline if tables else DEFAULT_BASELINE
    lines += ["", f"Each cell: median time per call · speedup vs {baseline} at the same stage (> 1: faster; none in "
              f"{baseline}'s own column) · share of peak where known (matmul stages and whole steps: achieved GFLOP/s of "
              "the backend's peak_matmul rate; elementwise stages: achieved GB/s of its peak_copy bandwidth). "
              f"† noisy: IQR above {NOISY_IQR:.0%} of the median. — not measured."]
    counted = sorted({t.metric.value for t in tables if t.metric.counted})
    if counted:
        lines += ["", f"Tables of {' and '.join(counted)}: median count per call (counted, not timed) · ratio "
                  f"{baseline} / this backend (> 1: fewer); never set against times, no share of peak."]
    for t in tables:
        lines += ["", _heading(t), ""]
        lines.append("| stage | " + " | ".join(md_escape(b) for b in t.backends) + " |")
        lines.append("|---|" + "---|" * len(t.backends))
        for stage in t.stages:
            row = [format_cell(t.cell(stage, b), b == t.baseline) for b in t.backends]
            lines.append(f"| {md_escape(stage)} | " + " | ".join(md_escape(c) for c in row) + " |")
        if t.baseline not in t.backends:
            lines += ["", f"No {baseline} results at this size: no speedups."]
        ratios = [(b, c.result.median / s.result.median) for b in t.backends
                  if (c := t.cell("tutorial_step", b)) and (s := t.cell(STEP, b))]
        if ratios:
            lines += ["", f"tutorial_step (the tutorial's own code) against train_step, {_quantity(t)} ratio (> 1: the "
                      "tutorial's code is slower): " + ", ".join(f"{b} {r:.2f}x" for b, r in ratios) + "."]
        rows = step_forms(t)
        sums = [(b, r) for b in t.backends if b in rows and (r := rows[b].train_over_stages) is not None]
        if sums:
            lines += ["", "train_step against the sum of its stages' medians (target: at most 1.10x): "
                      + ", ".join(f"{b} {r:.2f}x" for b, r in sums) + "."]
        if shows_forms(t):
            lines += forms_lines(t)
    lines += target_lines(tables)
    lines += _peaks(merged)
    lines += crossover_lines(races, tables)
    if figures:
        lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _mark(target: Target, value: float, size: str, backend: str) -> str:
    """' ✓' or ' ✗' where ``target`` is set at this size and backend; '' elsewhere."""
    if not target.applies(size, backend):
        return ""
    return f" {MET if target.met(value) else MISSED}"


def _limit(target: Target) -> str:
    """'≤ 1.05x at seed, compute' or '≥ 50% at gpu': the threshold, and where it is set."""
    limit = f"≤ {target.limit:.2f}x" if target.at_most else f"≥ {format_share(target.limit)}"
    return limit + (f" at {', '.join(target.sizes)}" if target.sizes else "")


def forms_lines(t: Table) -> list[str]:
    """The forms of the step at one size and dtype, side by side per backend (issue 14), with its targets marked."""
    rows = step_forms(t)
    names = [n for n in STEP_FORMS if any(t.cell(n, b) for b in t.backends)]
    scope = sorted({b for target in forms.ISSUE_14_TARGETS for b in target.backends})
    lines = ["", f"### Forms of the step at {t.size} ({t.dtype})", "",
             "Each form: median time per call · share of the same run's peak_matmul. Matmul floor: the time the step's "
             "five matmuls take at that rate. Ratios are of medians: each form over its floor, each step over the sum of "
             f"the stages it calls, measured one by one. Targets: {MET} met, {MISSED} missed, marked where they are set "
             f"(issue 14's for {' and '.join(scope)}).", "",
             "| form | " + " | ".join(md_escape(b) for b in t.backends) + " |", "|---|" + "---|" * len(t.backends)]

    def add(label: str, values: dict[str, float | None], text, target: Target | None = None) -> None:
        """One row of per-backend values, each marked against ``target`` where it is set; none when all are absent."""
        if all(values.get(b) is None for b in t.backends):
            return
        cells = ["—" if (x := values.get(b)) is None else text(x) + (_mark(target, x, t.size, b) if target else "")
                 for b in t.backends]
        lines.append(f"| {md_escape(label)} | " + " | ".join(md_escape(c) for c in cells) + " |")

    def ratio(x: float) -> str:
        return f"{x:.2f}x"

    for name in names:
        lines.append(f"| {md_escape(FORM_LABELS.get(name, name))} | "
                     + " | ".join(md_escape(format_cell(t.cell(name, b), True)) for b in t.backends) + " |")
    add("matmul floor (five matmuls at peak_matmul)", {b: r.matmul_floor for b, r in rows.items()}, format_time)
    floor = forms.STEP_OVER_MATMUL_FLOOR
    for name in names:
        over = {b: f.over_floor for b, r in rows.items() if (f := r.form(name))}
        if name in floor.subjects:
            add(f"{name} / matmul floor ({_limit(floor)})", over, ratio, floor)
        else:
            add(f"{name} / matmul floor", over, ratio)
    for target, values in ((forms.TRAIN_OVER_STAGES, {b: r.train_over_stages for b, r in rows.items()}),
                           (forms.WORKSPACE_OVER_OUT_STAGES, {b: r.workspace_over_out_stages for b, r in rows.items()})):
        add(f"{target.what} ({_limit(target)})", values, ratio, target)
    share = forms.OUT_STAGE_COPY_SHARE
    for stage in share.subjects:
        add(f"{stage}: share of peak_copy ({_limit(share)})",
            {b: c.share for b in t.backends if (c := t.cell(stage, b))}, format_share, share)
    return lines


def target_lines(tables: Sequence[Table]) -> list[str]:
    """The section on issue 14's targets: each judged wherever it was measured, and where it is still to measure.

    None unless some time table holds the forms issue 14 added (older results: no section)."""
    if not any(shows_forms(t) for t in tables):
        return []
    timed = [t for t in tables if t.metric is Metric.TIME]
    rows = [r for t in timed for r in step_forms(t).values()]
    shares = forms.stage_shares(c.result for t in timed for c in t.cells.values())
    judged = forms.checks(rows, shares)
    lines = ["", "## Kernel targets (issue 14)", ""]
    for target in forms.ISSUE_14_TARGETS:
        mine = [c for c in judged if c.target == target]
        missing = forms.unmeasured(target, mine)
        verdict = ("missed" if any(not c.met for c in mine) else "not measured" if not mine
                   else "met where measured" if missing else "met")
        where = f" ({', '.join(target.backends)})" if target.backends else ""
        text = f"- **{verdict}**: {target.what} {_limit(target)}{where}"
        if mine:  # nothing measured: the line already says where it is set
            points = _by_point(mine)
            if missing:
                points.append("not measured: " + ", ".join(f"{size} {backend}" for size, backend in missing))
            text += ": " + "; ".join(points)
        lines.append(text + ".")
    return lines


def _judged(c: Check) -> str:
    """'1.02x ✓' for a ratio, '43% ✗' for a share."""
    return (f"{c.value:.2f}x" if c.target.at_most else format_share(c.value)) + f" {MET if c.met else MISSED}"


def _by_point(judged: Sequence[Check]) -> list[str]:
    """'seed numpy 1.02x ✓' per point, naming the subject where the target judges several
    ('compute numpy: train_step 1.20x ✗, workspace_step 1.10x ✓')."""
    grouped: dict[tuple[str, str, str], list[Check]] = defaultdict(list)
    for c in judged:
        grouped[(c.size, c.backend, c.dtype)].append(c)
    texts = []
    for (size, backend, dtype), checks in grouped.items():
        where = f"{size} {backend}" + ("" if dtype == DEFAULT_DTYPE else f" {dtype}")
        if len(checks) == 1 and len(checks[0].target.subjects) == 1:
            texts.append(f"{where} {_judged(checks[0])}")
        else:
            texts.append(f"{where}: " + ", ".join(f"{c.subject} {_judged(c)}" for c in checks))
    return texts


def _quantity(t: Table) -> str:
    """What a table's values are: 'time', or the counted metric's name."""
    return "time" if t.metric is Metric.TIME else t.metric.value


def _heading(t: Table) -> str:
    work = f", {t.step_flops / 1e9:.3g} GFLOP per train_step" if t.step_flops else ""
    counted = f", {t.metric.value} per call" if t.metric.counted else ""
    return f"## {t.size}{counted}: N×D_in×H×D_out = {shape_text(t.shape)}, {t.dtype}{work}"


def _replacements(replaced: Sequence[tuple[Entry, Entry]]) -> list[str]:
    grouped: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for old, new in replaced:
        what = f"{new.backend} @ {new.size}" + ("" if new.dtype == DEFAULT_DTYPE else f" {new.dtype}")
        grouped[(old.source.path, new.source.path)][what] += 1
    lines = []
    for (old, new), whats in grouped.items():
        listed = ", ".join(f"{w} ({n} result{'s' if n != 1 else ''})" for w, n in whats.items())
        if old == new:
            lines.append(f"- `{new}` holds some results twice; the later entry is kept: {listed}")
        else:
            lines.append(f"- `{new}` replaces `{old}` for {listed}")
    return lines


def _peaks(merged: Merged) -> list[str]:
    if not merged.peaks:
        return []
    paths = {s.index: s.path for s in merged.sources}
    lines = ["", "## Peak rates (roofline probes)", "", "| backend | device | dtype | peak matmul | copy bandwidth | from |",
             "|---|---|---|---|---|---|"]
    columns = order_backends(b for (_, b, _, _) in merged.peaks)
    for (index, backend, device, dtype), rates in sorted(merged.peaks.items(),
                                                         key=lambda kv: (columns.index(kv[0][1]), kv[0])):
        matmul = format_rate(rates["peak_matmul"], "GFLOP/s") if "peak_matmul" in rates else "—"
        copy = format_rate(rates["peak_copy"], "GB/s") if "peak_copy" in rates else "—"
        lines.append(f"| {md_escape(backend)} | {md_escape(device)} | {dtype} | {matmul} | {copy} | "
                     f"`{md_escape(paths[index])}` |")
    return lines


def crossover_lines(races: Sequence[Crossover], tables: Sequence[Table]) -> list[str]:
    """The section 'When does the GPU win?' (none when no time table has train_step)."""
    tables = [t for t in tables if t.metric is Metric.TIME]
    if not any(t.cell(STEP, b) for t in tables for b in t.backends):
        return []
    lines = ["", f"## When does the GPU win? ({STEP}, by problem size)", ""]
    if not races:
        if not any(kind(t, b) == "gpu" for t in tables for b in t.backends):
            return lines + ["No GPU results in these files: nothing to set against the CPU."]
        return lines + ["No GPU backend has train_step results at a size where a CPU backend has them: no crossover to find."]
    for x in races:
        name = x.backend + ("" if x.dtype == DEFAULT_DTYPE else f" ({x.dtype})")
        at = x.at
        if at is None:
            last = x.races[-1]
            lines.append(f"- {name} does not overtake the fastest CPU backend at the {len(x.races)} size(s) measured; "
                         f"at the largest, {last.size}: {format_time(last.gpu)} vs {format_time(last.cpu)} "
                         f"({last.cpu_backend}), {format_speedup(last.cpu / last.gpu)}.")
            continue
        where = (f"from {at.size}" + (f" ({at.flops / 1e9:.3g} GFLOP per step)" if at.flops else "") +
                 f": {format_time(at.gpu)} vs {format_time(at.cpu)} ({at.cpu_backend}), {format_speedup(at.cpu / at.gpu)}")
        below = x.below
        if below is None:
            lines.append(f"- {name} is faster than the fastest CPU backend at every size measured, {where}.")
        else:
            lines.append(f"- {name} overtakes the fastest CPU backend {where}; at {below.size} it was still slower: "
                         f"{format_time(below.gpu)} vs {format_time(below.cpu)} ({below.cpu_backend}).")
    return lines
