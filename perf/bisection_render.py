"""Rendering, and only rendering, of a bisection (``perf.bisection.Bisection``): plain text and Markdown.

One line per benchmark (where it first changed and whether the confirmation agrees, or that it did
not change between the ends, or the candidates it may have changed at), the notes of the steps, then
every probe in the order it ran.
"""

from __future__ import annotations

from .bisection import BenchmarkBisection, Bisection, ProbeRecord, Skip, Status
from .render import md_escape


def _criterion(result: Bisection) -> str:
    return " or ".join(sorted(v.value for v in result.counts_as_change))


def _confirmation(b: BenchmarkBisection) -> str:
    c = b.confirmation
    seen = c.verdict.value if c.verdict is not None else "not measured"
    return f"{'confirmed' if c.agrees else 'NOT confirmed'} ({c.base} -> {c.head}: {seen})"


def _answer(b: BenchmarkBisection, result: Bisection) -> str:
    first, last = result.candidates[0], result.candidates[-1]
    if b.status is Status.UNCHANGED:
        return f"not changed between {first} and {last} ({b.endpoint_verdict}): not searched"
    if b.status is Status.UNRESOLVED:
        return (f"{b.change} at one of {', '.join(b.suspects)} (after {b.predecessor}): "
                f"{', '.join(b.skipped)} could not be measured")
    return f"{b.change} first at {b.first_changed} (after {b.predecessor}); {_confirmation(b)}"


def _outcome(record: ProbeRecord) -> str:
    if isinstance(record.outcome, Skip):
        return f"skipped: {record.outcome.reason}"
    by_verdict: dict[str, list[str]] = {}
    for name, verdict in sorted(record.outcome.items()):
        by_verdict.setdefault(str(verdict), []).append(name)
    return "; ".join(f"{verdict}: {', '.join(names)}" for verdict, names in by_verdict.items()) or "no benchmarks"


def _probe_line(record: ProbeRecord) -> str:
    return f"{record.base} -> {record.head} ({record.purpose}): {_outcome(record)}"


def _notes(result: Bisection) -> list[tuple[str, str]]:
    notes = [(b.name, f"{s.base} -> {s.head}: {s.note}") for b in result.benchmarks for s in b.steps if s.note]
    notes += [(b.name, f"confirmation: {b.confirmation.note}") for b in result.benchmarks
              if b.confirmation is not None and b.confirmation.note]
    return notes


def _probes(count: int) -> str:
    return f"{count} probe{'s' if count != 1 else ''}"


def _headline(result: Bisection) -> str:
    c = result.candidates
    return (f"Bisection of {len(c)} candidates, {c[0]} (good) .. {c[-1]} (bad), looking for: {_criterion(result)}; "
            f"{_probes(len(result.probes))}")


def _nothing_changed(result: Bisection) -> str:
    return (f"No benchmark changed ({_criterion(result)}) between {result.candidates[0]} and {result.candidates[-1]}: "
            "nothing to search.")


def to_text(result: Bisection) -> str:
    """A plain-text report: headline, one line per benchmark, notes, the probes in order."""
    lines = [_headline(result)]
    if not result.changed:
        lines.append(_nothing_changed(result))
    width = max(len(b.name) for b in result.benchmarks)
    lines += [f"  {b.name.ljust(width)}  {_answer(b, result)}; {_probes(b.probes)}" for b in result.benchmarks]
    notes = _notes(result)
    if notes:
        lines += ["", "Notes:", *(f"  {name}: {note}" for name, note in notes)]
    lines += ["", "Probes:"]
    lines += [f"  {i:>2}. {_probe_line(r)}" for i, r in enumerate(result.probes, 1)]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return md_escape(text) if text else "-"


def to_markdown(result: Bisection) -> str:
    """GitHub-flavoured Markdown: heading, table (one row per benchmark), notes, the probes in a details block."""
    lines = [f"### {md_escape(_headline(result))}", ""]
    if not result.changed:
        lines += [f"**{md_escape(_nothing_changed(result))}**", ""]
    lines += ["| Benchmark | Status | First changed | After | Change | Confirmation | Probes |",
              "|:---|:---|:---|:---|:---|:---|---:|"]
    for b in result.benchmarks:
        first_changed = b.first_changed or (f"one of {', '.join(b.suspects)}" if b.suspects else "")
        confirmation = _confirmation(b) if b.confirmation is not None else ""
        change = str(b.change or b.endpoint_verdict)
        cells = [f"`{md_escape(b.name)}`", str(b.status), _cell(first_changed), _cell(b.predecessor or ""),
                 f"**{change}**" if b.change else change, _cell(confirmation), str(b.probes)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = _notes(result)
    if notes:
        lines += ["", *(f"- `{md_escape(name)}`: {md_escape(note)}" for name, note in notes)]
    lines += ["", f"<details><summary>Probes ({len(result.probes)})</summary>", ""]
    lines += [f"{i}. {md_escape(_probe_line(r))}" for i, r in enumerate(result.probes, 1)]
    lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def render_bisection(result: Bisection, *, markdown: bool = False) -> str:
    """The report of ``result``: Markdown with ``markdown``, else plain text."""
    return to_markdown(result) if markdown else to_text(result)

