"""Tables and figures from perf-suite results: time per stage by backend, speedups, share of peak, GPU crossover,
and, where a run holds them, the forms of the step side by side against issue 14's kernel targets (``perf.forms``).

    python -m perf.report RESULTS.json [MORE.json ...] [--out DIR] [--baseline-backend numpy]

Reads the pytest-benchmark JSON that ``pytest perf`` writes (``--benchmark-json=PATH``, or a saved
``.benchmarks/<machine>/NNNN_*.json``) through ``perf.results``. Several files merge into one report;
where two hold the same size, dtype, backend, stage and metric, the file named later wins and the report
says so. Writes DIR/report.md (also printed on stdout), one DIR/stages-<size>.png per table and
DIR/step-vs-size.png. Counted results (instructions, cycles) get tables of their own, never mixed with times.

One job per module: ``load`` (files -> entries, merged), ``tables`` (tables, speedups, crossovers: pure),
``markdown`` (the text), ``figures`` (matplotlib's Agg canvas, no pyplot state), ``__main__`` (the
command: bad input is one line and exit 2). Never imports torch.
"""

from .figures import figure_names, write_figures
from .load import Entry, Loaded, Merged, Source, load, merge
from .markdown import crossover_lines, describe_fingerprint, format_cell, format_share, format_speedup, render_markdown
from .tables import Cell, Crossover, Race, Table, build_tables, crossovers, order_backends, order_stages

__all__ = ["Cell", "Crossover", "Entry", "Loaded", "Merged", "Race", "Source", "Table", "build_tables", "crossover_lines",
           "crossovers", "describe_fingerprint", "figure_names", "format_cell", "format_share", "format_speedup", "load",
           "merge", "order_backends", "order_stages", "render_markdown", "write_figures"]
