"""Benchmarks and reproductions; run from the repository root with ``python -m benchmarks.X``."""
