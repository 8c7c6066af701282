"""Speed, memory and efficacy measurements, side by side with the alternative. Not tests.

Run from the repository root as modules, e.g. `python -m benchmarks.build_throughput`; they import
only the installed packages (`mfpo_data`, `mfpo_train`), never `tests/`.
"""
