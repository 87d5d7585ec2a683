"""The whole training step per (size, backend): this project's, composed from the same stage
functions the stage benchmarks time, and the tutorial's literal code beside it as a yardstick."""


def test_step(step_case, benchmark):
    step_case.run(benchmark)


def test_tutorial_step(tutorial_case, benchmark):
    tutorial_case.run(benchmark)
