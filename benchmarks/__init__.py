"""Benchmarks for asgi-rotator: ``python -m benchmarks --help``; see benchmarks/README.md."""
