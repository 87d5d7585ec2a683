"""The perf layer: options, threads, timers, measurement, baselines and the regression gate."""
