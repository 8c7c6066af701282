"""Caption negatives with and without the context check, on the bundled sample and a second hand-written
set, so each negative can be judged plausible or not by eye:

    python -m benchmarks.caption_negatives            # the builder's negative per caption, before | after
    python -m benchmarks.caption_negatives --all      # every swap it could choose, kept or dropped, and why

"before" is the pair builder without the context check (`caption_pairs(check_context=False)`), "after"
with it; each caption is drawn with the same seed both times. A caption with no fitting swap makes no
pair after the check ("-").
"""

from __future__ import annotations

import json
import sys

import numpy as np

from mfpo_data.sources.coco import BUNDLED_COCO
from mfpo_data.textpairs.coco_pairs import PLURAL_ONLY, caption_pairs, normalize_caption, replace_mention
from mfpo_data.textpairs.plausibility import why_implausible
from mfpo_data.textpairs.vocabulary import find_mentions, plausible_substitutes


def sample_captions() -> list[tuple[str, set[str]]]:
    ann = BUNDLED_COCO / "annotations"
    instances = json.loads((ann / "instances_sample.json").read_text())
    names = {c["id"]: c["name"] for c in instances["categories"]}
    present: dict[int, set[str]] = {}
    for a in instances["annotations"]:
        present.setdefault(a["image_id"], set()).add(names[a["category_id"]])
    captions = json.loads((ann / "captions_sample.json").read_text())["annotations"]
    return [(c["caption"], present.get(c["image_id"], set())) for c in sorted(captions, key=lambda c: c["id"])]


def negatives(text: str, present: set[str]) -> list[tuple[str, str, str, str | None]]:
    """(category, substitute, rejected caption, why implausible or None) for the first 4 substitutes of
    each mention, as the builder draws them."""
    text = normalize_caption(text)
    out = []
    for m in find_mentions(text):
        if m.category not in present:
            continue
        subs = [c for c in plausible_substitutes(m.category, present) if m.is_plural or c not in PLURAL_ONLY][:4]
        for sub in subs:
            out.append((m.category, sub, replace_mention(text, m, sub)[0], why_implausible(text, m, sub)))
    return out


def builder_negative(index: int, text: str, present: set[str], check_context: bool) -> str | None:
    pairs = caption_pairs([(index, text)], present, np.random.default_rng(index), 1, check_context=check_context)
    return pairs[0].rejected if pairs else None


def main() -> None:
    from benchmarks.caption_set import CAPTIONS

    sets = (("bundled sample", sample_captions()), ("hand-written set", CAPTIONS))
    if "--all" not in sys.argv:
        for name, captions in sets:
            print(f"## {name}: {len(captions)} captions")
            made = {False: 0, True: 0}
            for i, (text, present) in enumerate(captions):
                before, after = (builder_negative(i, text, present, check) for check in (False, True))
                made[False] += before is not None
                made[True] += after is not None
                if before or after:
                    print(f"{i:3d}  {normalize_caption(text)}\n     before: {before or '-'}\n     after:  {after or '-'}")
            print(f"negatives made: before {made[False]}, after {made[True]}\n")
        return
    for name, captions in sets:
        total = kept = 0
        print(f"## {name}: {len(captions)} captions")
        for text, present in captions:
            for category, sub, rejected, why in negatives(text, present):
                total += 1
                kept += why is None
                print(f"{'keep' if why is None else 'drop'}  {category} -> {sub}: {rejected}" + (f"   [{why}]" if why else ""))
        print(f"candidate swaps: {total}, kept by the context check: {kept}\n")


if __name__ == "__main__":
    main()
