"""The step's forms and the kernel targets of issue 14, from pytest-benchmark JSON files of ``pytest perf``.

    PYTHONPATH=. python studies/forms_targets.py RESULTS.json [MORE.json ...]

Each file is read through ``perf.results`` and judged against its own roofline (the shares the plugin
recorded: run the probes in the same ``pytest perf``). Prints, per size, backend and dtype: every form
of the step (median, share of peak matmul, ratio to the matmul floor), train_step over its stages,
workspace_step over its stages' out= forms, each elementwise out= form's share of the copy bandwidth,
then each target judged where it is set. A plain text dump; ``python -m perf.report`` renders tables.
"""

from __future__ import annotations

import sys

from perf import forms
from perf.errors import ResultsError
from perf.results import load_run


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}x"


def show(path: str) -> None:
    results = forms.from_run(load_run(path))
    print(path)
    rows = forms.step_forms(results)
    shares = forms.stage_shares(results)
    for row in rows:
        floor = row.matmul_floor
        print(f"  {row.size} {row.backend} {row.dtype}: matmul floor {'-' if floor is None else f'{floor * 1e3:.4g} ms'}")
        for f in row.forms:
            print(f"    {f.name:15s} {f.median * 1e3:10.4f} ms  share {_pct(f.share):>5s}  over floor {_x(f.over_floor)}")
        print(f"    train_step / sum of stages {_x(row.train_over_stages)} (target <= {forms.TRAIN_OVER_STAGES.limit}); "
              f"workspace_step / sum of out= forms {_x(row.workspace_over_out_stages)} "
              f"(target <= {forms.WORKSPACE_OVER_OUT_STAGES.limit})")
    for s in shares:
        if s.stage in forms.OUT_STAGE_COPY_SHARE.subjects:
            print(f"  {s.size} {s.backend} {s.dtype} {s.stage:18s} {s.median * 1e3:9.4f} ms  {_pct(s.share):>5s} of {s.probe}")
    judged = forms.checks(rows, shares)
    for target in forms.ISSUE_14_TARGETS:
        limit = f"<= {target.limit:.2f}x" if target.at_most else f">= {target.limit:.0%}"
        print(f"  target: {target.what} {limit} at {', '.join(target.sizes)} ({', '.join(target.backends)})")
        for c in judged:
            if c.target == target:
                value = _x(c.value) if target.at_most else _pct(c.value)
                print(f"    {c.size} {c.backend} {c.dtype} {c.subject}: {value} {'met' if c.met else 'MISSED'}")
        for size, backend in forms.unmeasured(target, judged):
            print(f"    {size} {backend}: not measured")


def main(paths: list[str]) -> int:
    """0 when every file was shown; 2 (one line on stderr) for no file or one that cannot be read."""
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    for path in paths:
        try:
            show(path)
        except ResultsError as exc:
            print(f"forms_targets: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
