"""The hallucination scorers that both the build and `mfpo-eval` use: pure functions over (answers, ground
truth), no model, no torch.

    chair.py    CHAIR (the reference chair.py by default; RLAIF-V's rule path and a fixed vocabulary as switches)
    text.py     the tokeniser, singulariser and noun lemmatiser they run on, offline
    coco.py     ground truth from a COCO folder: instance categories, captions, CHAIR's ground truth
    pope.py     POPE's questions, answer parsers and scores
    results.py  what makes two results comparable (scorer version, id hash, settings)
    io.py       answer and question files, one-line errors naming the file and line
    data/       vendored lists (synonyms, singular forms, WordNet nouns, POPE's files), with sources and licences

They live in `mfpo_data` so that a build can use them without importing `mfpo_train`: the on-policy
source (`sources/on_policy.py`) labels a model's own answers with them, so its labels are what
`mfpo-eval` would say. `mfpo_train.eval` adds the other benchmarks (Object HalBench, AMBER, MMHal-Bench).
"""
