"""Benchmarks: each measures a ratio against a reference taken in the same run.

Run from the repository root as modules, ``python -m bench.<script>`` (README, "Benchmarks"),
so that a bench may import a shared helper of this folder (``bench.fit_peers``,
``bench.bench_histmaker.floor``) without editing ``sys.path``.
"""
