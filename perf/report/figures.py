"""The report's figures, on matplotlib's Agg canvas (``Figure`` objects, no pyplot state): time (or a
counted metric) per stage for each table, and train_step time against problem size with the GPU crossover."""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

from kernels.problem import DEFAULT_DTYPE

from ..cases import OUT_FORMS, STEPS
from ..metric import Metric
from ..render import format_count, format_time
from .load import Entry, Source, shape_text
from .markdown import describe_fingerprint, gpu_name
from .tables import STEP, Crossover, Table, device_kind, kind, order_backends

STEP_FIGURE = "step-vs-size.png"
_COLORS = {"numpy": "tab:blue", "torch-cpu": "tab:orange", "torch-cuda": "tab:green", "torch-cuda:1": "tab:olive",
           "torch-mps": "tab:red"}
_SPARE_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:cyan", "tab:gray")
# The forms of the step other than train_step (whose line style tells dtypes apart): each its own thin line
# (style, marker (None: the device's), label).
_FORM_STYLES = {"tutorial_step": ("--", None, "tutorial's code"), "workspace_step": ((0, (1, 1.5)), "^", "workspace_step"),
                "graph_step": ((0, (6, 1.5, 1, 1.5, 1, 1.5)), "D", "graph_step (CUDA graph)")}


def figure_names(tables: Sequence[Table]) -> list[str]:
    """File names of the figures, in order: stages-<size>[-<dtype>][-<metric>].png per table, then step-vs-size.png."""
    names = [_stage_figure(t) for t in tables]
    if _sized(tables):
        names.append(STEP_FIGURE)
    return names


def _sized(tables: Sequence[Table]) -> list[Table]:
    """The time tables with a train_step size, when any of them holds train_step: the points of step-vs-size."""
    sized = [t for t in tables if t.step_flops and t.metric is Metric.TIME]
    return sized if any(t.cell(STEP, b) for t in sized for b in t.backends) else []


def _stage_figure(t: Table) -> str:
    label = t.size + ("" if t.dtype == DEFAULT_DTYPE else f"-{t.dtype}") + (f"-{t.metric.value}" if t.metric.counted else "")
    return f"stages-{re.sub(r'[^A-Za-z0-9._-]+', '_', label)}.png"


def backend_colors(backends: Iterable[str]) -> dict[str, str]:
    colors, spare = {}, iter(_SPARE_COLORS * 4)
    for b in order_backends(backends):
        colors[b] = _COLORS.get(b) or next(spare, "black")
    return colors


def _machines(sources: Iterable[Source]) -> str:
    return " | ".join(dict.fromkeys(describe_fingerprint(s.fingerprint, short=True) for s in sources))


def _footnote(sources: Iterable[Source], width_in: float) -> str:
    sources = list(sources)
    files = "; ".join(f"{Path(s.path).name} ({s.datetime.replace('T', ' ')[:16]})" if s.datetime else Path(s.path).name
                      for s in sources)
    return textwrap.fill(f"Machine: {_machines(sources)}. Data: {files}. Median over all rounds of each benchmark.",
                         width=int(width_in * 72 / 4.4))  # about 4.4 points per character at 7 points


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _add_footnote(fig, text: str) -> None:
    """Small grey text along the bottom-left edge; as a supxlabel, the layout makes room for it."""
    fig.supxlabel(text, x=0.005, ha="left", fontsize=7, color="0.35", multialignment="left")


def _value_axis(ax, values: Sequence[float], metric: Metric = Metric.TIME) -> None:
    """Log-scale y with ticks in human units (1 µs, 10 µs, ... or 1 k, 10 k, ...); 1-2-5 ticks under 3 decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = min(values), max(values)
    ax.set_yscale("log")
    ax.set_ylim(lo / 2, hi * 2.5)
    subs = (1.0,) if hi / lo > 10**2.5 else (1.0, 2.0, 5.0)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    label = (lambda v: format_time(v, keep_zeros=False)) if metric is Metric.TIME else format_count
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: label(v) if v > 0 else ""))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_stages(table: Table, path: Path) -> None:
    """Grouped bars: median value per stage (x, execution order, steps last) per backend, log scale."""
    fig = _new_figure(12, 6)
    ax = fig.add_subplot()
    colors = backend_colors(table.backends)
    width = 0.8 / len(table.backends)
    values = [c.result.median for c in table.cells.values()]
    several = _several_machines(table.sources)
    for i, backend in enumerate(table.backends):
        xs, ys = [], []
        for j, stage in enumerate(table.stages):
            if (c := table.cell(stage, backend)) is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(c.result.median)
        first = next(c.result for (_, b), c in table.cells.items() if b == backend)
        ax.bar(xs, ys, width=width * 0.92, color=colors[backend], label=_legend_label(first, several), zorder=2)
    _value_axis(ax, values, table.metric)
    ax.set_xticks(range(len(table.stages)), table.stages, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(table.stages) - 0.4)
    for block, label in ((STEPS, "whole step"), (OUT_FORMS, "out= forms")):
        first = next((j for j, s in enumerate(table.stages) if s in block), 0)
        if first > 0:
            ax.axvline(first - 0.5, color="0.4", ls=":", lw=1)
            ax.text(first - 0.45, 0.98, label, transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="0.3")
    ax.grid(axis="y", which="major", color="0.85", zorder=0)
    ax.grid(axis="y", which="minor", color="0.93", zorder=0)
    quantity = "time" if table.metric is Metric.TIME else table.metric.value
    ax.set_xlabel("stage (execution order)")
    ax.set_ylabel(f"median {quantity} per call (log scale)")
    ax.legend(title="backend", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"{quantity.capitalize()} per stage, {table.size} (N×D_in×H×D_out = {shape_text(table.shape)}, "
                 f"{table.dtype})", fontweight="bold")
    ax.set_title(_machines(table.sources), fontsize=9, color="0.25")
    _add_footnote(fig, _footnote(table.sources, 12))
    fig.savefig(path)


def _legend_label(result: Entry, several_machines: bool) -> str:
    """The backend, with its GPU's name, or its CPU's when the figure mixes machines: 'torch-cuda\n(NVIDIA H100)'."""
    name = gpu_name(result)
    if name is None and several_machines and device_kind(result.device) == "cpu":
        name = result.source.fingerprint.get("cpu")
    return f"{result.backend}\n({name})" if name else result.backend


def _several_machines(sources: Iterable[Source]) -> bool:
    return len({describe_fingerprint(s.fingerprint) for s in sources}) > 1


def plot_step_vs_size(tables: Sequence[Table], races: Sequence[Crossover], path: Path) -> None:
    """train_step median time against GFLOP per step, log-log, one line per backend, each other form of the step
    (perf.cases.STEPS) a thinner line of its own style and label; a dashed vertical line where each GPU backend
    overtakes the fastest CPU backend."""
    sized = _sized(tables)
    dtypes = list(dict.fromkeys(t.dtype for t in sized))
    backends = order_backends(b for t in sized for b in t.backends)
    colors = backend_colors(backends)
    never = {(x.backend, x.dtype) for x in races if x.at is None}
    srcs = {s.index: s for t in sized for s in t.sources}
    sources = [srcs[i] for i in sorted(srcs)]
    several = _several_machines(sources)
    fig = _new_figure(11, 6.5)
    ax = fig.add_subplot()
    times, styles = [], {d: s for d, s in zip(dtypes, ("-", "-.", ":", "--"))}
    for stage in STEPS:
        for dtype in dtypes:
            for backend in backends:
                cells = [(t, c) for t in sized if t.dtype == dtype and (c := t.cell(stage, backend))]
                if not cells:
                    continue
                pts = [(t.step_flops / 1e9, c.result.median, kind(t, backend)) for t, c in cells]
                label = backend if stage != STEP else _legend_label(cells[0][1].result, several)
                label += "" if len(dtypes) == 1 else f" {dtype}"
                form_style, form_marker, form_label = _FORM_STYLES.get(stage, ("-", None, stage))
                if stage != STEP:
                    label += f", {form_label}"
                elif (backend, dtype) in never:
                    label += "\n(never overtakes the CPU here)"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[backend], lw=1.2 if stage != STEP else 2,
                        ls=form_style if stage != STEP else styles.get(dtype, "-"), alpha=0.7 if stage != STEP else 1,
                        marker=form_marker or ("s" if pts[0][2] == "gpu" else "o"), ms=4 if stage != STEP else 6, label=label,
                        zorder=3)
                times += [p[1] for p in pts]
    flops = sorted({t.step_flops / 1e9 for t in sized})
    _value_axis(ax, times)
    ax.set_xscale("log")
    ax.set_xlim(flops[0] / 2, flops[-1] * 2)
    from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    top = ax.secondary_xaxis("top")
    names = {}
    for t in sized:
        names.setdefault(t.step_flops / 1e9, t.size)
    top.set_xticks(list(names), list(names.values()), fontsize=8, rotation=30 if len(names) > 6 else 0)
    top.xaxis.set_minor_locator(NullLocator())
    top.set_xlabel("size", fontsize=8, color="0.3", labelpad=2)
    for k, x in enumerate(r for r in races if r.at):
        _mark_crossover(ax, x, colors[x.backend], k, flops)
    ax.grid(which="major", color="0.85", zorder=0)
    ax.set_xlabel(f"work per step ({STEP} GFLOP, log scale)")
    ax.set_ylabel(f"median time per {STEP} (log scale)")
    ax.legend(title="backend", loc="upper left", fontsize=9)
    fig.suptitle(f"{STEP} time against problem size" + (f" ({dtypes[0]})" if len(dtypes) == 1 else ""), fontweight="bold")
    ax.set_title(_machines(sources), fontsize=9, color="0.25", pad=10)
    _add_footnote(fig, _footnote(sources, 11))
    fig.savefig(path)


def _mark_crossover(ax, x: Crossover, color: str, k: int, flops: Sequence[float]) -> None:
    """A dashed vertical line at the crossover size and a labelled arrow to the GPU's point; labels stack upwards
    from the bottom of the axes, on the side of the line with more room."""
    at = x.at
    gflop = at.flops / 1e9
    ax.axvline(gflop, color=color, ls="--", lw=1.2, zorder=1)
    right_half = math.log(gflop / flops[0]) > 0.6 * math.log(max(flops[-1] / flops[0], 1.0001))
    text = f"{x.backend} is faster than the CPU from the smallest size"
    if x.below:
        times = f"{format_time(at.gpu)} vs {format_time(at.cpu)}"
        text = f"{x.backend} overtakes {at.cpu_backend} (the fastest CPU) at {at.size}: {times}"
    ax.annotate(text, xy=(gflop, at.gpu), xytext=(gflop / 1.25 if right_half else gflop * 1.25, 0.03 + 0.08 * k),
                textcoords=ax.get_xaxis_transform(), ha="right" if right_half else "left", va="bottom", fontsize=8,
                color=color, bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": color, "alpha": 0.9},
                arrowprops={"arrowstyle": "->", "color": color, "shrinkA": 0, "shrinkB": 4}, zorder=4)


def write_figures(tables: Sequence[Table], races: Sequence[Crossover], out: Path) -> list[Path]:
    """Every figure of ``figure_names``, written into ``out``; returns their paths."""
    written = []
    for t in tables:
        written.append(out / _stage_figure(t))
        plot_stages(t, written[-1])
    if _sized(tables):
        written.append(out / STEP_FIGURE)
        plot_step_vs_size(tables, races, written[-1])
    return written
