"""The logic behind the GitHub Actions workflows: the YAML only wires these commands.

    python -m ci.pr_gate        interleaved A/B of the merge base and the head (hosted CPU runner)
    python -m ci.gpu_setup      a virtual environment on a self-hosted GPU runner (stdlib only)
    python -m ci.gpu_baseline   save / compare / list / reset the baseline of one runner class
    python -m ci.gpu_env        the GPU, driver and CUDA versions of this machine
    python -m ci.merge_report   one report from the results of every runner class

Exit status, the same for every command (perf.cli's):
    0  passed, saved, or nothing to gate (no baseline yet, a regression accepted by label)
    1  a regression, and nothing else
    2  usage or environment error (bad arguments, shallow clone, no GPU, pytest failed, nothing
       saved, an unusable folder or an unreadable input): one line, and outcome.json and the job
       summary still written as far as the job got
  130  interrupted
"""
