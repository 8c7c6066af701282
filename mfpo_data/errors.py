"""Known problems: each carries a one-line message that the CLI prints as it is (exit code 1)."""


class MfpoError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(MfpoError):
    """A recipe or training config that does not validate; the message names the dotted key."""


class MissingExtraError(MfpoError, ImportError):
    """A backend was asked for whose optional dependencies are not installed."""


class SchemaError(MfpoError):
    """A dataset whose columns do not match `mfpo_data.schema.features()`."""


class MissingModelError(MfpoError, OSError):
    """A model id that is neither a local folder nor in the Hugging Face cache (offline), or cannot be loaded."""
