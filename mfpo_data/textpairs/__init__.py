"""The answers' words and the text pairs built from them: the COCO object vocabulary and negated mentions,
caption pairs from COCO annotations (`coco_pairs`, checked by `plausibility`), and pairs from a model's own
answers (`policy_pairs`).
"""
