"""The step's forms and the kernel targets of issue 14, from pytest-benchmark JSON files of ``pytest perf``.

    PYTHONPATH=. python scripts/forms_targets.py RESULTS.json [MORE.json ...]

Each file is judged against its own roofline probes (run them in the same ``pytest perf``). Prints,
per size, backend and dtype: every form of the step (median, share of peak matmul, ratio to the
matmul floor), train_step over its stages, workspace_step over its stages' out= forms, and each
elementwise out= form's share of the copy bandwidth. A plain text dump; the report renders tables.
"""

from __future__ import annotations

import json
import sys

from kernels.problem import MATMUL_STAGES
from perf import forms
from perf.cases import base_stage


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}x"


def show(path: str) -> None:
    with open(path, encoding="utf-8") as fh:
        results = forms.from_benchmarks(json.load(fh))
    peaks = forms.peaks_of(results)
    print(f"{path}")
    for (backend, dtype), p in sorted(peaks.items()):
        print(f"  roofline {backend} {dtype}: peak matmul {p.matmul_gflops or 0:.4g} GFLOP/s, "
              f"copy {p.copy_gbps or 0:.4g} GB/s")
    for row in forms.step_forms(results, peaks):
        print(f"  {row.size} {row.backend} {row.dtype}: matmul floor "
              f"{'-' if row.matmul_floor_s is None else f'{row.matmul_floor_s * 1e3:.4g} ms'}")
        for f in row.forms:
            print(f"    {f.name:15s} {f.median_s * 1e3:10.4f} ms  share {_pct(f.share):>5s}  over floor {_x(f.over_floor)}")
        print(f"    train_step / sum of stages {_x(row.train_over_stages)} (target <= 1.10); workspace_step / sum of "
              f"out= forms {_x(row.workspace_over_out_stages)} (target <= {forms.WORKSPACE_OVER_OUT_STAGES_MAX})")
    for s in forms.stage_shares(results, peaks):
        if s.stage.endswith("_out") and base_stage(s.stage) not in MATMUL_STAGES:
            print(f"  {s.size} {s.backend} {s.dtype} {s.stage:18s} {s.median_s * 1e3:9.4f} ms  {_pct(s.share):>5s} of "
                  f"{s.probe} (target >= {forms.OUT_STAGE_COPY_SHARE_MIN:.0%} at the memory-bound size)")


if __name__ == "__main__":
    for name in sys.argv[1:] or sys.exit(__doc__):
        show(name)
