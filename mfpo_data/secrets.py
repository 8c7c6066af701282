"""What of a build may be published: the recipe parts that describe the data, with no secret and no local path.

- `public_recipe` keeps the sections that decide the rows (seed, source, the backend sections,
  filters) and the package versions; `executor` (Slurm `env_command`, `sbatch_args`, accounts, Ray
  addresses) and `output` (local folders) are how and where a build ran, not what it made.
- `public_value` replaces a local absolute path (`/home/me/coco`, `~/data`, `C:\\data`), or one inside a
  text, by `<local>/` and its last component, in any nested value.
- `scrub` replaces every token-shaped string (Hugging Face, GitHub, OpenAI, AWS, Slack, Google keys,
  JWTs, private keys, credentials in URLs, `token=...` / `password: ...` assignments) by `<redacted>`.
  Every text that can be published (the dataset card, publish's messages) goes through it, and so does
  every message of the commands: an `MfpoError`'s text (`errors.py`) and, through `redact_logging`,
  every log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any


PUBLIC_SECTIONS = ("seed", "source", "keywords", "grounding", "segmentation", "perturbation", "scoring", "filters", "versions")
REDACTED = "<redacted>"  # not `***`, which YAML reads as an alias

TOKEN_PATTERNS = [
    re.compile(p)
    for p in (
        r"\bhf_[A-Za-z0-9]{20,}",  # Hugging Face user tokens
        r"\bapi_org_[A-Za-z0-9]{20,}",  # Hugging Face organisation tokens
        r"\bgh[pousr]_[A-Za-z0-9]{30,}",  # GitHub
        r"\bgithub_pat_[A-Za-z0-9_]{40,}",
        r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",  # OpenAI, Anthropic
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
        r"\bxox[abprs]-[A-Za-z0-9-]{10,}",  # Slack
        r"\bAIza[0-9A-Za-z_-]{35}",  # Google API keys
        r"\bglpat-[A-Za-z0-9_-]{20,}",  # GitLab
        r"\bwandb_v1_[A-Za-z0-9_]{20,}",  # Weights & Biases
        r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    )
]
# user:password@ after a scheme; also after "https:/", which is what a URL becomes once it went through a Path
URL_CREDENTIALS = re.compile(r"(?<=:/)/?[^/\s:@]+:[^/\s@]+(?=@)")
ASSIGNMENT = re.compile(  # HF_TOKEN=..., password: ..., "api_key": "..." (not max_answer_tokens: 64)
    r"(?i)(\b(?:[a-z0-9]+[_-])*(?:token|secret|password|passwd|api[_-]?key|access[_-]?key|private[_-]?key)"
    r"\b['\"]?\s*[=:]\s*['\"]?)([^\s'\",;]+)"
)


EMBEDDED_PATH = re.compile(r"(?<![\w:/.~<>-])~?/(?:[\w.-]+/)+[\w.-]*")


def scrub(text: str, *known: str | None) -> str:
    """`text` with token-shaped strings, credentials and the `known` secrets replaced by `<redacted>`."""
    for secret in known:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern in TOKEN_PATTERNS:
        text = pattern.sub(REDACTED, text)
    text = URL_CREDENTIALS.sub(lambda m: "/" + REDACTED if m.group(0).startswith("/") else REDACTED, text)
    return ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED if m.group(2) != REDACTED else m.group(0), text)


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record's text through `scrub`."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = scrub(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True


def redact_logging() -> None:
    """Every handler of the root logger (and Python's last-resort one) scrubs what it prints; the commands call
    it after configuring logging."""
    for handler in [*logging.getLogger().handlers, *([logging.lastResort] if logging.lastResort else [])]:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def is_local_path(value: str) -> bool:
    return value.startswith(("/", "~", "\\\\")) or bool(re.match(r"[A-Za-z]:[\\/]", value))


def public_value(value: Any) -> Any:
    """`value` with local absolute paths reduced to `<local>/NAME`, in nested mappings and lists."""
    if isinstance(value, Mapping):
        return {k: public_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [public_value(v) for v in value]
    if isinstance(value, str) and is_local_path(value):
        path = PureWindowsPath(value) if re.match(r"[A-Za-z]:[\\/]|\\\\", value) else PurePosixPath(value)
        return f"<local>/{path.name}" if path.name else "<local>"
    if isinstance(value, str):  # a path inside a text ("weights at /home/me/sam.pt"), not a URL's path
        return EMBEDDED_PATH.sub(lambda m: f"<local>/{PurePosixPath(m.group(0)).name}", value)
    return value


def public_recipe(recipe: Mapping[str, Any]) -> dict:
    """The sections of a resolved recipe that describe the data, with local paths reduced."""
    return {k: public_value(recipe[k]) for k in PUBLIC_SECTIONS if k in recipe}
