"""One benchmark per (size, stage, backend): ``pytest perf -k relu``; and each stage in its out=
form, as the workspace step calls it: ``pytest perf -k stage_out``."""


def test_stage(stage_case, benchmark):
    stage_case.run(benchmark)


def test_stage_out(stage_out_case, benchmark):
    stage_out_case.run(benchmark)
