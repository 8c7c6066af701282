"""`preset: rlhf_v`: openbmb/RLHF-V-Dataset as published (the MFPO paper's text-preference source).

The dataset card (huggingface.co/datasets/openbmb/RLHF-V-Dataset, README "Data fields") lists
`ds_name`, `image` (an Image: {bytes, path}), `text` ("a dict with the keys question, chosen and
rejected", stored as a JSON string), `origin_dataset`, `origin_split` (meta information: the model that
wrote the original answer and the question type), `idx` (int64) and `image_path`; one parquet file,
`RLHF-V-Dataset.parquet`, about 5.7K rows. RLHF-V's own converter (github.com/RLHF-V/RLHF-V,
`convert_parquet_to_tsv_demo.py`) writes the same texts as a JSON list `[question, chosen, rejected]`;
both forms are read.

- ids: `ds_name:idx`; `origin_dataset`, `origin_split`, `image_path` (and `ds_name`, `idx`) go into `metadata`;
- images: the `image` column (Hub, `save_to_disk` folder, parquet files), or, where a copy has no
  `image` column (a JSON/JSONL export), the file `image_path` under `source.image_root`;
- a `text` that is not valid JSON is a `bad_json` reject, one without a question or answer a
  `missing_field` reject; the texts are kept exactly as published (no stripping).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from mfpo_data.sources.presets.base import Preset


TEXT_KEYS = ("question", "chosen", "rejected")


class RlhfV(Preset):
    name = "rlhf_v"
    columns = {"id": ["ds_name", "idx"], "question": "text.question", "chosen": "text.chosen",
               "rejected": "text.rejected", "image": "image"}  # fmt: skip
    inputs = ("text",)
    produced = TEXT_KEYS
    metadata = ("ds_name", "idx", "origin_dataset", "origin_split", "image_path")
    image_fallback = "image_path"

    def expand(self, record: dict) -> Iterator[dict]:
        raw = record.get("text")
        if raw is None:
            yield self.reject(record, "missing_field: no 'text'")
            return
        if isinstance(raw, (str, bytes)):
            try:
                parsed = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                where = f", char {e.pos}" if isinstance(e, json.JSONDecodeError) else ""
                yield self.reject(record, f"bad_json: 'text' is not valid JSON ({getattr(e, 'msg', e)}{where})")
                return
        else:
            parsed = raw  # a copy that stores `text` as a struct
        if isinstance(parsed, list) and len(parsed) == len(TEXT_KEYS):
            parsed = dict(zip(TEXT_KEYS, parsed, strict=True))
        if not isinstance(parsed, dict):
            yield self.reject(record, f"bad_json: 'text' holds a {type(parsed).__name__}, not an object with {', '.join(TEXT_KEYS)}")
            return
        missing = [k for k in TEXT_KEYS if k not in parsed]
        if missing:
            yield self.reject(record, f"missing_field: 'text' has no '{missing[0]}'")
            return
        yield {**record, **{f"text.{k}": parsed[k] for k in TEXT_KEYS}}
