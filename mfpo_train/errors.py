"""Training failures that the CLI reports in one line (exit code 1)."""

from mfpo_data.errors import MfpoError


class TrainingError(MfpoError):
    """The run cannot go on: too many non-finite losses, no checkpoint to resume, a reference mismatch."""
