"""The efficacy benchmark: the MFPO paper's claims at toy scale (python -m benchmarks.efficacy.efficacy)."""
