"""One benchmark per (size, stage, backend): ``pytest perf -k relu``."""


def test_stage(stage_case, benchmark):
    stage_case.run(benchmark)
