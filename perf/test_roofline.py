"""What the hardware can do, per backend, in the same run: a large matmul and a large copy."""


def test_roofline(roofline_case, benchmark):
    roofline_case.run(benchmark)
