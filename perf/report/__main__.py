"""python -m perf.report RESULTS.json [MORE.json ...] [--out DIR] [--baseline-backend numpy]

Exit status: 0 when the report is written, 2 with one line on stderr for bad input (perf.cli).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cli import Parser, UsageError, run_main
from .figures import figure_names, write_figures
from .load import load, merge
from .markdown import render_markdown
from .tables import DEFAULT_BASELINE, build_tables, crossovers, order_backends

PROG = "python -m perf.report"
DEFAULT_OUT = "docs/results/report"


def _parser() -> Parser:
    p = Parser(prog=PROG,
               description="Tables and figures from perf-suite results (pytest-benchmark JSON written by pytest perf).")
    p.add_argument("results", nargs="+", metavar="RESULTS.json",
                   help="results files; where two hold the same size, dtype, backend and stage, the later one wins")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"folder for report.md and the PNG figures (default: {DEFAULT_OUT})")
    p.add_argument("--baseline-backend", default=None, metavar="NAME",
                   help=f"the backend speedups are computed against (default: {DEFAULT_BASELINE})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_main(PROG, lambda: _report(argv))


def _report(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    baseline = args.baseline_backend or DEFAULT_BASELINE
    merged = merge([load(path, i) for i, path in enumerate(args.results)])
    tables = build_tables(merged, baseline)
    if not tables:
        raise UsageError("the results hold only roofline probes: no stage or step to report")
    backends = {b for t in tables for b in t.backends}
    if baseline not in backends:
        if args.baseline_backend:
            raise UsageError(f"--baseline-backend {baseline!r} is in none of the results; they hold "
                             f"{', '.join(order_backends(backends))}")
        merged.notes.append(f"no {baseline} results: no speedups (choose another with --baseline-backend)")
    races = crossovers(tables)
    text = render_markdown(merged, tables, races, figures=figure_names(tables), command=shlex.join([*PROG.split(), *argv]))
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(text, encoding="utf-8")
        written = write_figures(tables, races, out)
    except OSError as exc:
        raise UsageError(f"cannot write the report into {out}: {exc.strerror or exc}") from None
    sys.stdout.write(text)
    for note in merged.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {out / 'report.md'} and {len(written)} figure(s): {', '.join(p.name for p in written)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
