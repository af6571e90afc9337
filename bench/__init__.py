"""Benchmarks: model latency, pipeline throughput, attention scaling (`wastesort bench`)."""
