"""Stage 1: a tiny random LLaVA trained from scratch on the biased scenes, saved like a model id.

The model is `mfpo_train.tiny.build_tiny_llava` with the task's words added to its tokenizer as whole tokens
(`model.resize_token_embeddings`): "USER: <image>x16\\nDescribe the scene.\\nASSISTANT: red circle, green
square.</s>" is about 33 tokens. The SFT data mixes the two tasks the evaluation asks: "Describe the scene."
(the canonical description) and "Is there a {colour shape} in the image?" (yes / no, half each; a "no" names
a present shape in another colour or an absent shape). mfpo_train has no SFT; the loop is here, on
`MFPOCollator(sequences=("chosen",))` and `mfpo_train.model.sequence_logps` (token-mean NLL of the answer),
AdamW with a warm-up and a cosine decay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.efficacy import scenes


TASK_TOKENS = ("USER", "ASSISTANT", "Describe", " the", " scene", "Is", " there", " a", " in", " image", "yes", "no",
               *scenes.COLORS, *(f" {c}" for c in scenes.COLORS), *(f" {s}" for s in scenes.SHAPES))
YES_NO_SHARE = 0.25  # of the SFT examples


def build_model(hidden: int, layers: int, seed: int, vision_hidden: int = 32):
    import torch

    from mfpo_train.tiny import build_tiny_llava

    model, processor = build_tiny_llava(image_size=scenes.SIZE, hidden_size=hidden, num_layers=layers, seed=seed,
                                         vision_hidden_size=vision_hidden)
    processor.tokenizer.add_tokens(list(TASK_TOKENS))
    torch.manual_seed(seed)
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    return model, processor


def chat_row(image, question: str, answer: str) -> dict[str, Any]:
    """A row `MFPOCollator` reads (the answer as `chosen`; no perturbed image needed)."""
    from PIL import Image

    from mfpo_data.schema import assistant_turn, user_turn

    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    return {"images": [pil], "rejected_images": [pil], "prompt": user_turn(question),
            "chosen": assistant_turn(answer), "rejected": assistant_turn(answer)}


def yes_no_question(rng: np.random.Generator, scene: scenes.Scene, label: str) -> str:
    """A present object ("yes"), or ("no") a present shape in another colour or an absent shape in any colour."""
    if label == "yes":
        return scenes.YES_NO.format(phrase=scene.phrases[rng.integers(len(scene.phrases))])
    present = set(scene.phrases)
    absent = [f"{c} {s}" for s in scenes.SHAPES for c in scenes.COLORS if f"{c} {s}" not in present]
    return scenes.YES_NO.format(phrase=absent[rng.integers(len(absent))])


def sft_rows(seed: int, n: int, p_prior: float, p_co: float) -> list[dict]:
    rng = np.random.default_rng([seed, 77])
    rows = []
    for scene in scenes.make_scenes(seed, "sft", n, p_prior, p_co):
        image = scenes.render(scene)
        if rng.random() < YES_NO_SHARE:
            label = "yes" if rng.random() < 0.5 else "no"
            rows.append(chat_row(image, yes_no_question(rng, scene, label), label))
        else:
            rows.append(chat_row(image, scenes.DESCRIBE, scenes.description(scene)))
    return rows


def batches(rows: list, size: int):
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


WARMUP = 100  # SFT steps of linear warm-up before the cosine decay


def lr_factor(step: int, total: int) -> float:
    """Linear warm-up over WARMUP steps, then cosine decay to 0 at `total`."""
    import math

    return min(1.0, (step + 1) / WARMUP) * 0.5 * (1.0 + math.cos(math.pi * step / total))


def sft(args, seed: int, path: Path) -> dict:
    """Train and save the seed's SFT model to `path`; return {"sft_final_loss": mean of the last 20 losses}."""
    import torch

    from mfpo_train.collator import MFPOCollator
    from mfpo_train.model import sequence_logps

    model, processor = build_model(args.hidden, args.layers, seed, args.vision_hidden)
    collator = MFPOCollator(processor, max_length=None, sequences=("chosen",))
    rows = sft_rows(seed, args.sft_examples, args.p_prior, args.p_co)
    collated = [collator(chunk) for chunk in batches(rows, args.sft_batch)]  # once; epochs reuse them, reshuffled
    opt = torch.optim.AdamW(model.parameters(), lr=args.sft_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, args.sft_steps))
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    model.train()
    losses = []
    for _ in range(args.sft_steps):
        if not order:
            order = torch.randperm(len(collated), generator=gen).tolist()
        batch = collated[order.pop()]
        logps = sequence_logps(model, batch)  # summed over the answer tokens
        loss = -(logps / batch["completion_mask"].sum(-1)).mean()  # token-mean NLL
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.save_pretrained(path)
    processor.save_pretrained(path)
    tail = losses[-20:]
    return {"sft_final_loss": sum(tail) / len(tail)}
