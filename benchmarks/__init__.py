"""The benchmark harness: ``python -m benchmarks.run`` (``make bench``) writes ``benchmarks/RESULTS.md``."""
