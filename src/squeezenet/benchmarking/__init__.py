"""Benchmarking: every inference engine side by side (latency, throughput, size, memory), each
in its own process, with the machine it ran on named beside every figure."""
