"""Record presets: published datasets whose rows are not one flat pair each (see `base.py`).

    rlhf_v.py      openbmb/RLHF-V-Dataset: question and both answers in one JSON string, `text`
    vlfeedback.py  MMInstruction/VLFeedback: a prompt and rated completions -> chosen/rejected pairs

The presets that only rename columns (`default`, `rlaif_v`) are `records.PRESETS`.
"""

from __future__ import annotations

from mfpo_data.sources.presets.base import META, PAIR, REJECT, Preset
from mfpo_data.sources.presets.rlhf_v import RlhfV
from mfpo_data.sources.presets.vlfeedback import VlFeedback


RECORD_PRESETS: dict[str, type[Preset]] = {p.name: p for p in (RlhfV, VlFeedback)}

__all__ = ["META", "PAIR", "RECORD_PRESETS", "REJECT", "Preset"]
