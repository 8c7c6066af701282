"""Hallucination scorers for vision-language models: CHAIR, Object HalBench, POPE and AMBER.

Scorers are pure functions over (answers, ground truth) that reproduce the reference
implementations offline, with switches where the references disagree. Nothing here imports torch;
the model runner that produces the answers lives beside them and imports it lazily.

    from mfpo_train.eval import chair, coco
    vocab = chair.load_vocabulary()
    gt = coco.chair_ground_truth(coco.read_coco(None, "sample"), vocab)
    result = chair.score_chair([{"image_id": 1, "answer": "A woman in a suit."}], gt, vocab)
"""
