"""Hallucination scorers for vision-language models: CHAIR, Object HalBench, POPE and AMBER.

Scorers are pure functions over (answers, ground truth) that reproduce the reference
implementations offline, with switches where the references disagree. CHAIR, POPE and what they
stand on (tokeniser, COCO ground truth, results, answer files) are in `mfpo_data.scorers`, where the
build can use them too; Object HalBench, AMBER and MMHal-Bench are here. Nothing here imports torch;
the model runner that produces the answers lives beside them and imports it lazily.

    from mfpo_data.scorers import chair, coco
    vocab = chair.load_vocabulary()
    gt = coco.chair_ground_truth(coco.read_coco(None, "sample"), vocab)
    result = chair.score_chair([{"image_id": 1, "answer": "A woman in a suit."}], gt, vocab)

The model side: `runner` (generation), `probes` (MFPO's log-prob probes), `suite` (each benchmark's
items and scorer), `api` (`evaluate` for notebooks, `run_evaluation` for `mfpo-eval run`), `report`.

    from mfpo_train.eval import evaluate
    results = evaluate(model, processor, benchmark="pope")
"""


def __getattr__(name):  # `evaluate` without importing torch at `import mfpo_train.eval`
    if name == "evaluate":
        from mfpo_train.eval.api import evaluate

        return evaluate
    raise AttributeError(f"module 'mfpo_train.eval' has no attribute {name!r}")
