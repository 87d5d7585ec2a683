"""The whole training step per (size, backend), in every form, each composed from the same stage
functions the stage benchmarks time: this project's allocating step, the tutorial's literal code
beside it as a yardstick, the workspace step (every stage in its out= form, nothing allocated per
step) and that step captured once as a CUDA graph and replayed (skipped, with the reason, elsewhere)."""


def test_step(step_case, benchmark):
    step_case.run(benchmark)


def test_tutorial_step(tutorial_case, benchmark):
    tutorial_case.run(benchmark)


def test_workspace_step(workspace_case, benchmark):
    workspace_case.run(benchmark)


def test_graph_step(graph_case, benchmark):
    graph_case.run(benchmark)
