"""`preset: vlfeedback`: MMInstruction/VLFeedback as published (Silkie's data; the MFPO paper's Table 9).

The dataset card (huggingface.co/datasets/MMInstruction/VLFeedback) lists `id` (string), `prompt`
(string), `models` (list of strings), `completions` (a sequence of {`annotations`, `model`,
`response`}, where `annotations` holds `Helpfulness`, `Visual Faithfulness` and `Ethical
Considerations`, each {`Rating` (a string), `Rationale`}) and `img_path` (string); 80,258 prompts with
4 completions each. Images are files named by `img_path`, not embedded in the rows: point
`source.image_root` at the folder that holds them. `datasets` loads a `sequence` of structs as a
dict of lists (`completions["response"][i]`); a JSON copy has a list of dicts. Both are read.

Which completions make a pair (`source.preset_options.selection`):

- `all_pairs` (default), Silkie's rule as its released code applies it (github.com/vlf-silkie/VLFeedback,
  `run_dpo.py`, `make_vlfeedback_paired_dataset`): every two completions of a prompt; each gets the
  mean of its aspect ratings; the higher mean is chosen; equal means are skipped, and so is a pair
  with a rating that is not a number. Up to 6 pairs per prompt, ids `ID:i-j`.
- `best_worst`: one pair per prompt, the completion with the highest mean against the one with the
  lowest, among the completions with every rating (ids `ID:i-j` too; the unrated ones are listed in
  `metadata.unrated`); a prompt whose best or worst mean is shared is dropped, so no tie is broken
  by completion order.

`preset_options.aspects` (default: every aspect a completion has, as Silkie) restricts the mean,
e.g. `[Visual Faithfulness]` for hallucination-only preferences. Nothing is dropped silently: a tie
is a `tied_ratings` reject, a missing or non-numeric rating a `missing_rating` reject, with the
completion and aspect named. The models and mean ratings of a pair go into `metadata`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import combinations
from typing import Any

from mfpo_data.errors import ConfigError
from mfpo_data.sources.presets.base import META, PAIR, Preset


SELECTIONS = ("all_pairs", "best_worst")


class VlFeedback(Preset):
    name = "vlfeedback"
    columns = {"id": "id", "question": "prompt", "chosen": "completion.chosen", "rejected": "completion.rejected",
               "image": "img_path"}  # fmt: skip
    inputs = ("prompt", "completions")
    produced = ("chosen", "rejected")
    image_files = True
    defaults = {"selection": "all_pairs", "aspects": None}

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        if self.options["selection"] not in SELECTIONS:
            raise ConfigError(f"'source.preset_options.selection' is {self.options['selection']!r}, expected one of: {', '.join(SELECTIONS)}")
        aspects = self.options["aspects"]
        if aspects is not None and (not isinstance(aspects, list) or not aspects or not all(isinstance(a, str) for a in aspects)):
            raise ConfigError("'source.preset_options.aspects' must be a non-empty list of aspect names, or null for all")

    def expand(self, record: dict) -> Iterator[dict]:
        completions = _completions(record.get("completions"))
        if isinstance(completions, str):
            yield self.reject(record, completions)
            return
        base = {k: v for k, v in record.items() if k != "completions"}
        scored = [(i, c, *self.mean_rating(c)) for i, c in enumerate(completions)]
        if self.options["selection"] == "all_pairs":
            for a, b in combinations(scored, 2):
                yield self.pair(base, a, b)
            return
        rated = [s for s in scored if s[3] is None]
        if len(rated) < 2:
            i, c, _, problem = next(s for s in scored if s[3] is not None)
            yield self.reject(base, f"missing_rating: completion {i} ({c.get('model')}): {problem}; {len(rated)} rated, 2 needed")
            return
        best, worst = max(s[2] for s in rated), min(s[2] for s in rated)
        top, bottom = [s for s in rated if s[2] == best], [s for s in rated if s[2] == worst]
        for which, shared in (("best", top), ("worst", bottom)):
            if len(shared) > 1:
                names = [str(s[0]) for s in shared]
                yield self.reject(base, f"tied_ratings: completions {', '.join(names)} share the {which} mean rating {shared[0][2]:g}",
                                  pair="-".join(names))  # fmt: skip
                return
        out = self.pair(base, top[0], bottom[0])
        out[META]["unrated"] = [s[0] for s in scored if s[3] is not None]  # left out of the choice, with no rating
        yield out

    def pair(self, base: dict, a: tuple, b: tuple) -> dict:
        (i, ca, sa, pa), (j, cb, sb, pb) = a, b
        name = f"{min(i, j)}-{max(i, j)}"
        for k, c, problem in ((i, ca, pa), (j, cb, pb)):
            if problem is not None:
                return self.reject(base, f"missing_rating: completion {k} ({c.get('model')}): {problem}", pair=name)
        if sa == sb:
            return self.reject(base, f"tied_ratings: completions {i} and {j} both have mean rating {sa:g}", pair=name)
        (win, cw, sw), (lose, cl, sl) = ((i, ca, sa), (j, cb, sb)) if sa > sb else ((j, cb, sb), (i, ca, sa))
        meta = {"chosen_model": cw.get("model"), "rejected_model": cl.get("model"), "chosen_rating": round(sw, 4),
                "rejected_rating": round(sl, 4), "completions": [win, lose]}  # fmt: skip
        return {**base, "completion.chosen": cw.get("response"), "completion.rejected": cl.get("response"),
                PAIR: name, META: meta}  # fmt: skip

    def mean_rating(self, completion: dict) -> tuple[float | None, str | None]:
        """(mean of the aspect ratings, None) or (None, why there is none)."""
        annotations = completion.get("annotations")
        if not isinstance(annotations, dict) or not annotations:
            return None, "no annotations"
        aspects = self.options["aspects"] or [a for a, v in annotations.items() if v is not None]
        values = []
        for aspect in aspects:
            entry = annotations.get(aspect)
            rating = entry.get("Rating") if isinstance(entry, dict) else None
            if rating is None:
                return None, f"no '{aspect}' rating"
            try:
                value = float(rating)
            except (TypeError, ValueError):
                return None, f"'{aspect}' rating is {rating!r}, not a number"
            if not math.isfinite(value):
                return None, f"'{aspect}' rating is {rating!r}, not a number"
            values.append(value)
        if not values:
            return None, "no ratings"
        return sum(values) / len(values), None


def _completions(value: Any) -> list[dict] | str:
    """The completions as a list of dicts (from a list of dicts or `datasets`' dict of lists), or a reject reason."""
    if value is None:
        return "missing_field: no 'completions'"
    if isinstance(value, dict):  # datasets' Sequence of structs: {"annotations": [...], "model": [...], "response": [...]}
        lengths = {len(v) for v in value.values() if isinstance(v, list)}
        if len(lengths) != 1 or not all(isinstance(v, list) for v in value.values()):
            return "bad_field: 'completions' columns have different lengths"
        n = lengths.pop()
        value = [{k: v[i] for k, v in value.items()} for i in range(n)]
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        return f"bad_field: 'completions' is {type(value).__name__}, not a list of completions"
    if len(value) < 2:
        return f"missing_field: {len(value)} completion(s), a pair needs 2"
    return value
