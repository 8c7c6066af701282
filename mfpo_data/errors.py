"""Known problems: each carries a one-line message that the CLI prints as it is (exit code 1)."""

from mfpo_data.secrets import scrub


class MfpoError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The message passes through publish's redaction (`secrets.scrub`): a token or a password inside a
    path or URL the user gave is never shown, whichever message names it.
    """

    def __init__(self, *args):
        super().__init__(*(scrub(a) if isinstance(a, str) else a for a in args))


class ConfigError(MfpoError):
    """A recipe or training config that does not validate; the message names the dotted key."""


class MissingExtraError(MfpoError, ImportError):
    """A backend was asked for whose optional dependencies are not installed."""


def install_hint(extra: str) -> str:
    """How to install an extra, in every command's wording: mfpo is installed from a checkout (`pip install -e`)."""
    return f'pip install -e ".[{extra}]" in the mfpo checkout'


class SchemaError(MfpoError):
    """A dataset whose columns do not match `mfpo_data.schema.features()`."""


class MissingModelError(MfpoError, OSError):
    """A model id that is neither a local folder nor in the Hugging Face cache (offline), or cannot be loaded."""
