"""The terminal summary of ``pytest perf``: one compact grid per size, stages as rows and backends as
columns (each stage beside its ``out=`` form, the allocating step beside the workspace step), then
the roofline probes, then the gate's decisions one line each, the verdict last.

torch.utils.benchmark's ``Compare`` and asv's ``compare`` are the anchors. ``of_run`` turns what a run
measured into ``Cell`` records (with their shares of the same run's roofline) and renders them with
the gate's comparisons; nothing is measured or decided here.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from kernels.problem import STAGES

from .cases import PROBES, Case
from .gate import Comparison, Verdict
from .metric import Metric
from .render import format_change, format_share, format_value, summary_line
from .roofline import add_shares

WIDTH = 120
MARKS = {Verdict.REGRESSED: "R", Verdict.IMPROVED: "I", Verdict.INCONCLUSIVE: "?", Verdict.NEW: "N",
         Verdict.UNCHANGED: "", Verdict.MISSING: ""}
LEGEND = "marks: R regressed, I improved, ? inconclusive, N new (not in the baseline); unmarked: unchanged"
# Rows below the stages: (label, allocating form, out= form).
STEP_ROWS = (("step", "train_step", "workspace_step"), ("tutorial", "tutorial_step", None), ("graph", "graph_step", None))
TIME_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))
COUNT_UNITS = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))
# Lines listed per verdict other than REGRESSED (every regression is always listed): a baseline caught in
# a slow state reads most benchmarks improved, and the summary must stay short; -v lists every benchmark.
LISTED = 8


@dataclass(frozen=True)
class Cell:
    """One benchmark of this run, as the grid shows it."""

    size: str                          # the size's name (a table each)
    shape: tuple[int, int, int, int]   # (N, D_in, H, D_out)
    stage: str                         # a stage, its out= form (relu_out), a step form or a roofline probe
    backend: str
    value: float                       # what the gate uses: the fastest process's minimum, a count, a median
    metric: Metric
    share: float | None = None         # of this run's roofline probe
    in_cache: bool = False             # its data fits in the last-level cache: its share of memory bandwidth means little
    rate: str = ""                     # a probe's rate, e.g. "45.2 GFLOP/s"
    verdict: Comparison | None = None


def _unit(values: Sequence[float], metric: Metric) -> tuple[float, str]:
    """One unit for a table: the largest in which the table's median value is at least 1."""
    mid = sorted(values)[len(values) // 2] if values else 1.0
    for scale, name in (TIME_UNITS if metric is Metric.TIME else COUNT_UNITS):
        if mid >= scale:
            return scale, name
    return (TIME_UNITS if metric is Metric.TIME else COUNT_UNITS)[-1]


def _sig3(value: float) -> str:
    """3 significant figures, no exponent: 0.0123, 1.23, 12.3, 123, 1230."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"


def _cell(c: Cell | None, scale: float, compared: bool) -> str:
    if c is None:
        return ""
    text = _sig3(c.value / scale)
    if c.in_cache:
        text += " cache"
    elif c.share is not None:
        text += f" {format_share(c.share)}"
    if compared:
        v = c.verdict
        change = format_change(v.ratio) if v is not None and v.ratio is not None else ""
        text += f" {change:>6} {MARKS.get(v.verdict, '') if v is not None else '':1}"
    return text


def grid(cells: Sequence[Cell], backends: Sequence[str], compared: bool, value_label: str = "") -> list[str]:
    """The tables, one per size: stages and steps as rows, each backend's allocating and out= forms as columns."""
    by = {(c.size, c.stage, c.backend): c for c in cells}
    sizes = list(dict.fromkeys(c.size for c in cells if c.stage in STAGES or c.stage.endswith("_step")))
    metric = cells[0].metric if cells else Metric.TIME
    lines: list[str] = []
    for size in sizes:
        mine = [c for c in cells if c.size == size]
        scale, unit = _unit([c.value for c in mine], metric)
        forms = [(b, out) for b in backends for out in (False, True)
                 if any((size, f"{s}_out" if out else s, b) in by for s in STAGES)]
        rows = [(s, row) for s in STAGES if any(row := [by.get((size, f"{s}_out" if out else s, b)) for b, out in forms])]
        for label, alloc, out_form in STEP_ROWS:
            row = [by.get((size, out_form if out else alloc, b)) if (out_form or not out) else None for b, out in forms]
            if any(row):
                rows.append((label, row))
        rows += _ratios(size, by, forms, metric)
        what = f"{metric.unit} in {unit}" if unit else metric.unit
        shape = "×".join(map(str, mine[0].shape))
        lines += _wrapped(f"{size} ({shape}), {what}{f': {value_label}' if value_label else ''}"
                          f"{'; % of the roofline' if metric is Metric.TIME else ''}"
                          f"{'; change vs the baseline' if compared else ''}")
        texts = [[label, *(_cell(c, scale, compared) if isinstance(c, Cell) else (c or "")
                           for c in row)] for label, row in rows]
        head = ["", *(f"{b}{' out=' if out else ''}" for b, out in forms)]
        widths = [max(len(r[i]) for r in [head, *texts]) for i in range(len(head))]
        for r in [head, *texts]:
            lines.append("  ".join(r[0].ljust(widths[0]) if i == 0 else r[i].rjust(widths[i]) for i in range(len(r))).rstrip())
        lines.append("")
    return lines


def _ratios(size: str, by: Mapping, forms, metric: Metric) -> list[tuple[str, list[str]]]:
    """The step against the sum of the stages it calls, and against the tutorial's code, per column."""
    if metric is not Metric.TIME:
        return []
    sums, tutorials = [], []
    for b, out in forms:
        step = by.get((size, "workspace_step" if out else "train_step", b))
        stages = [by.get((size, f"{s}_out" if out else s, b)) for s in STAGES]
        tutorial = by.get((size, "tutorial_step", b))
        sums.append(f"{step.value / sum(c.value for c in stages):.2f}x" if step and all(stages) else "")
        tutorials.append(f"{step.value / tutorial.value:.2f}x" if step and tutorial else "")
    rows = []
    if any(sums):
        rows.append(("step/stages", sums))
    if any(tutorials):
        rows.append(("step/tutorial", tutorials))
    return rows


def probes(cells: Sequence[Cell]) -> list[str]:
    """One line per backend: its roofline measured in this run (and against the baseline's, where compared)."""
    by_backend: dict[str, list[str]] = {}
    for c in cells:
        if c.rate:
            ratio = c.verdict.ratio if c.verdict is not None else None
            against = f" ({format_change(1 / ratio)} vs baseline)" if ratio else ""  # of the rate, not the time
            by_backend.setdefault(c.backend, []).append(f"{'peak matmul' if c.stage == 'peak_matmul' else 'copy'} "
                                                        f"{c.rate}{against}")
    return [f"roofline, {b}: {', '.join(rates)}" for b, rates in by_backend.items()]


def _wrapped(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "    ", break_on_hyphens=False)


def gate_lines(rows: Sequence[Comparison], meta: Mapping, metric: Metric, not_selected: int) -> list[str]:
    """The gate's header (how it decided) and one line per benchmark that is not unchanged (asv's compare)."""
    lines = _wrapped(f"gate: {meta.get('mode', '')}, {meta.get('evidence', '')}".rstrip(", "))
    for key in ("baseline", "confirmation", "machine state", "run-to-run drift"):
        if meta.get(key):
            lines += _wrapped(f"{key}: {meta[key]}", "  ")
    for verdict in (Verdict.REGRESSED, Verdict.INCONCLUSIVE, Verdict.IMPROVED, Verdict.NEW):
        mine = sorted((c for c in rows if c.verdict == verdict), key=_largest_change_first)
        listed = mine if verdict == Verdict.REGRESSED else mine[:LISTED]
        lines += [_gate_line(c, metric) for c in listed]
        if len(mine) > len(listed):
            lines.append(f"    ... and {len(mine) - len(listed)} more {verdict.value.lower()} (-v lists every benchmark)")
    unchanged = sum(c.verdict == Verdict.UNCHANGED for c in rows)
    missing = [c for c in rows if c.verdict == Verdict.MISSING]
    tail = [f"{unchanged} unchanged"]
    if not_selected:
        tail.append(f"{not_selected} benchmark(s) of the baseline not selected in this run")
    if missing:
        tail.append(f"{len(missing)} benchmark(s) of the baseline missing now (removed or renamed?): "
                    f"{', '.join(c.name.split('::')[-1] for c in missing[:3])}{' ...' if len(missing) > 3 else ''}")
    lines += _wrapped("; ".join(tail), "  ")
    return lines


def _largest_change_first(c: Comparison) -> tuple[float, str]:
    return (-abs(math.log(c.ratio)) if c.ratio and c.ratio > 0 else 0.0, c.name)


def _gate_line(c: Comparison, metric: Metric) -> str:
    """One benchmark's verdict in a line that fits WIDTH whole: the columns close up before anything is cut."""
    interval = f" [{format_change(c.ci_low)}, {format_change(c.ci_high)}]" if c.ci_low is not None else ""
    values = f"{format_value(c.baseline_value, metric)} -> {format_value(c.current_value, metric)}"
    # "A/B vs <commit>": the confirmation line above names the commit once
    by = f"  ({'A/B' if c.evidence.startswith('A/B') else c.evidence})" if c.evidence else ""
    head, name = f"  {MARKS[c.verdict] or ' '} {format_change(c.ratio):>7}", c.name.split("::")[-1]
    line = f"{head}{interval:<20} {values:<24} {name}{by}"
    return line if len(line) <= WIDTH else f"{head}{interval} {values} {name}{by}"


def render(cells: Sequence[Cell], backends: Sequence[str], rows: Sequence[Comparison] | None, meta: Mapping,
           not_selected: int = 0, value_label: str = "") -> list[str]:
    """The whole summary: grids, probes, and with a baseline the gate's lines, its legend and the verdict, last."""
    compared = rows is not None
    lines = grid(cells, backends, compared, value_label)
    lines += probes(cells)
    if compared:
        metric = cells[0].metric if cells else Metric.TIME
        lines += ["", *gate_lines(rows, meta, metric, not_selected), f"  {LEGEND}", summary_line(rows)]
    return [line[:WIDTH] if len(line) > WIDTH else line for line in lines]


def of_run(shown: Mapping[str, tuple[Case, float, Mapping]], metric: Metric, rows: Sequence[Comparison] | None,
           meta: Mapping, deselected: Collection[str], value_label: str, cache_bytes: int) -> list[str]:
    """The summary of a run: ``shown`` is what it measured ({name: (case, the gate's value, extra_info)}),
    ``rows`` the gate's verdicts (None without a baseline); benchmarks of the baseline that -k/-m left out
    (``deselected``) are counted, not listed."""
    infos = {name: dict(info) for name, (_, _, info) in shown.items()}
    add_shares(list(infos.values()), cache_bytes)
    verdicts = {c.name: c for c in rows or ()}
    cells = []
    for name, (case, value, _) in shown.items():
        info = infos[name]
        rate = ""
        if case.stage in PROBES and not metric.counted:
            rate = (_sig3(info["gflops"]) + " GFLOP/s" if case.stage == "peak_matmul" else _sig3(info["gbps"]) + " GB/s")
        cells.append(Cell(case.problem.name, case.problem.shape, case.stage, case.backend, value, metric,
                          info.get("peak_share"), bool(info.get("in_cache")), rate, verdicts.get(name)))
    not_selected = sum(1 for c in rows or () if c.verdict == Verdict.MISSING and c.name in deselected)
    compared = None if rows is None else [c for c in rows if not (c.verdict == Verdict.MISSING and c.name in deselected)]
    return render(cells, list(dict.fromkeys(c.backend for c in cells)), compared, meta, not_selected, value_label)
