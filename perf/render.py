"""Rendering, and only rendering: numbers to text, verdicts to tables (plain text and Markdown).

One formatter per kind of number, used by the gate's tables, the report, the cross-check and
the plugin's messages, so a microsecond is spelled one way everywhere (µs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from .gate import Comparison, Verdict, passed, percent, tally
from .metric import Metric

# Rows are listed worst first: what needs a look comes before what does not.
_ROW_ORDER = {Verdict.REGRESSED: 0, Verdict.INCONCLUSIVE: 1, Verdict.IMPROVED: 2, Verdict.MISSING: 3, Verdict.NEW: 4,
              Verdict.UNCHANGED: 5}
_COLUMNS = ("benchmark", "{baseline}", "{current}", "{change} [{ci}]", "p", "p adj.", "threshold", "verdict")
# What a report's value columns hold, as its meta may name them (``COLUMNS``); these where it does not.
COLUMNS = "columns"
_DEFAULT_NAMES = {"baseline": "baseline", "current": "current", "change": "change"}


def format_time(seconds: float | None, keep_zeros: bool = True) -> str:
    """3 significant digits in s, ms, µs or ns: 0.000139768 -> '140 µs', 0.004 -> '4.00 ms' ('4 ms' without keep_zeros)."""
    if seconds is None:
        return "-"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        value = float(f"{seconds / scale:.3g}")
        if value >= 1 or unit == "ns":
            return (f"{value:#.3g}".rstrip(".") if keep_zeros else f"{value:.3g}") + f" {unit}"
    raise AssertionError("unreachable")


def format_count(count: float | None) -> str:
    """3 significant digits with a k/M/G suffix: 3104217 -> '3.10 M', 43210 -> '43.2 k', 512 -> '512'."""
    if count is None:
        return "-"
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if count >= scale:
            return f"{count / scale:#.3g}".rstrip(".") + suffix
    return f"{count:.3g}"


def format_value(value: float | None, metric: Metric | str = Metric.TIME) -> str:
    """A benchmark's value in its metric's units: a time, or a count of instructions or cycles per call."""
    return format_time(value) if Metric(metric) is Metric.TIME else format_count(value)


def format_share(share: float) -> str:
    """A fraction of peak as a percentage: 0.5 -> '50%', 0.034 -> '3.4%', below 0.01% -> '<0.01%'."""
    percent = 100 * share
    if percent < 0.01:
        return "<0.01%"
    return f"{percent:.2g}%" if percent < 10 else f"{percent:.0f}%"


def format_change(ratio: float | None) -> str:
    return "-" if ratio is None else f"{(ratio - 1) * 100:+.1f}%"


def format_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def change_with_interval(c: Comparison) -> str:
    if c.ratio is None:
        return "-"
    if c.ci_low is None or c.ci_high is None:
        return format_change(c.ratio)
    return f"{format_change(c.ratio)} [{format_change(c.ci_low)}, {format_change(c.ci_high)}]"


def regression_line(c: Comparison, metric: Metric | str = Metric.TIME) -> str:
    """The reason a benchmark failed, in one line under its test's own header in pytest's FAILURES (which names
    it, as the junit XML does): 'REGRESSED by +30.0% (interval ...), median ... -> ..., ...', about 100 columns."""
    return (f"REGRESSED by {format_change(c.ratio)} (interval {format_change(c.ci_low)} .. "
            f"{format_change(c.ci_high)}), median {format_value(c.baseline_value, metric)} -> "
            f"{format_value(c.current_value, metric)}, threshold {percent(c.threshold)}, p={format_p(c.p_adjusted)}")


def summary_line(comparisons: Sequence[Comparison]) -> str:
    """'FAIL: 1 regressed, 0 improved, ... (22 benchmarks)' or 'PASS: ...'."""
    n = tally(comparisons)
    body = ", ".join(f"{n[v]} {v.value}" for v in Verdict)
    return f"{'PASS' if passed(comparisons) else 'FAIL'}: {body} ({len(comparisons)} benchmarks)"


def _sorted_rows(comparisons: Sequence[Comparison]) -> list[Comparison]:
    return sorted(comparisons, key=lambda c: (_ROW_ORDER[c.verdict], c.name))


def _meta_items(meta: Mapping) -> list[tuple[str, str]]:
    items = []
    for key, value in meta.items():
        if str(key).startswith("_") or key in ("title", COLUMNS) or isinstance(value, Mapping):
            continue
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        items.append((str(key), str(value)))
    return items


def _interval_label(meta: Mapping) -> str:
    conf = meta.get("confidence")
    return f"{float(conf) * 100:.3g}% CI" if isinstance(conf, (int, float)) else "CI"


def _metric(meta: Mapping) -> Metric:
    try:
        return Metric(meta.get("metric", Metric.TIME.value))
    except ValueError:
        return Metric.TIME


def _header(meta: Mapping) -> list[str]:
    """The table's column names: what each value column holds, as ``meta[COLUMNS]`` says (the A/B's base and
    head are medians of per-process values and its change a paired estimate: each is named)."""
    names = {**_DEFAULT_NAMES, **dict(meta.get(COLUMNS) or {})}
    return [h.format(ci=_interval_label(meta), **names) for h in _COLUMNS]


def _cells(c: Comparison, metric: Metric) -> list[str]:
    return [c.name, format_value(c.baseline_value, metric), format_value(c.current_value, metric),
            change_with_interval(c), format_p(c.p_value), format_p(c.p_adjusted), percent(c.threshold), c.verdict.value]


def to_text(comparisons: Sequence[Comparison], meta: Mapping) -> str:
    """A plain-text report: meta header, aligned table (worst first), notes, summary line."""
    metric = _metric(meta)
    lines = [str(meta.get("title", "Performance comparison"))]
    lines += [f"  {k}: {v}" for k, v in _meta_items(meta)]
    header = _header(meta)
    rows = [_cells(c, metric) for c in _sorted_rows(comparisons)]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {1, 2, 3, 4, 5, 6}

    def fmt(row):
        cells = (cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        return "  ".join(cells).rstrip()

    lines += ["", fmt(header), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows]
    notes = [f"  {c.name}: {c.note}" for c in _sorted_rows(comparisons) if c.note]
    if notes:
        lines += ["", "Notes:", *notes]
    lines += ["", summary_line(comparisons)]
    return "\n".join(lines) + "\n"


def md_escape(text: str) -> str:
    # GFM splits table cells on '|' even inside code spans; '\|' is the one escape honoured there.
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(comparisons: Sequence[Comparison], meta: Mapping) -> str:
    """GitHub-flavoured Markdown for a CI job summary: heading with the outcome, meta list,
    summary, table (worst first; regressions and improvements in bold), notes."""
    metric = _metric(meta)
    n = tally(comparisons)
    outcome = "PASS" if passed(comparisons) else f"FAIL ({n[Verdict.REGRESSED]} regressed)"
    lines = [f"### {md_escape(str(meta.get('title', 'Performance comparison')))}: {outcome}", ""]
    lines += [f"- **{md_escape(k)}:** {md_escape(v)}" for k, v in _meta_items(meta)]
    lines += ["", f"**{summary_line(comparisons)}**", ""]
    header = _header(meta)
    header = [h if h.startswith("p") else h[0].upper() + h[1:] for h in header]
    if comparisons:
        lines += ["| " + " | ".join(header) + " |", "|:---|---:|---:|---:|---:|---:|---:|:---|"]
    for c in _sorted_rows(comparisons):
        cells = _cells(c, metric)
        cells[0] = f"`{md_escape(cells[0])}`"
        if c.verdict in (Verdict.REGRESSED, Verdict.IMPROVED):
            cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- `{md_escape(c.name)}`: {md_escape(c.note)}" for c in _sorted_rows(comparisons) if c.note]
    if notes:
        lines += ["", f"<details><summary>Notes ({len(notes)})</summary>", "", *notes, "", "</details>"]
    return "\n".join(lines) + "\n"


def verdict_report(comparisons: Sequence[Comparison], meta: Mapping, extra: Mapping | None = None) -> dict:
    """The JSON document of a verdict report (``perf.results.load_verdicts`` reads it back)."""
    return {
        "meta": dict(meta),
        "summary": {"passed": passed(comparisons), "counts": {str(k): v for k, v in tally(comparisons).items()},
                    "total": len(comparisons), "line": summary_line(comparisons)},
        "comparisons": [c.as_dict() for c in comparisons],
        **dict(extra or {}),
    }


def what_changed(comparisons: Sequence[Comparison], change: str) -> str:
    """One paragraph: what ``change`` (e.g. 'numpy 2.2.6 -> 2.4.6') does to the step, then to the rest."""
    def short(c: Comparison) -> str:
        return c.name.rpartition("::")[2]

    steps = [c for c in comparisons if "::test_step[" in c.name and c.ratio is not None]
    rest = [c for c in comparisons if c not in steps and c.verdict in (Verdict.REGRESSED, Verdict.IMPROVED)]
    parts = [f"{change}:"]
    if steps:
        parts.append("the step " + "; ".join(f"{short(c)} {change_with_interval(c)} ({c.verdict})" for c in steps) + ".")
    for verdict, word in ((Verdict.REGRESSED, "slower"), (Verdict.IMPROVED, "faster")):
        mine = sorted((c for c in rest if c.verdict == verdict), key=lambda c: -abs(math.log(c.ratio or 1)))
        if mine:
            named = ", ".join(f"{short(c)} {format_change(c.ratio)}" for c in mine[:4])
            parts.append(f"{len(mine)} other benchmark(s) {word}: {named}{' ...' if len(mine) > 4 else ''}.")
    unchanged = sum(c.verdict == Verdict.UNCHANGED for c in comparisons if c not in steps)
    parts.append(f"{unchanged} other(s) unchanged.")
    return " ".join(parts)
