"""`mfpo-eval`: hallucination benchmarks and MFPO's probes for any image-text-to-text model.

    from mfpo_train.eval import evaluate
    results = evaluate(model, processor, benchmark="pope", out_dir="eval/pope")
"""


def __getattr__(name):  # the notebook API without importing torch at `import mfpo_train.eval`
    if name == "evaluate":
        from mfpo_train.eval.api import evaluate

        return evaluate
    raise AttributeError(name)
