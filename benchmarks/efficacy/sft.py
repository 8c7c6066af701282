"""Stage 1: a tiny random LLaVA trained from scratch on the biased data, saved like a model id.

The model is `mfpo_train.tiny.build_tiny_llava` with the task's words added to its tokenizer as whole
tokens (`model.resize_token_embeddings`): "USER: <image>x16\\nWhat color is the circle?\\nASSISTANT: red</s>"
is 32 tokens instead of 51, which makes every step of the benchmark about 1.6x faster and changes nothing
else. mfpo_train has no SFT; the loop is here, on `MFPOCollator(sequences=("chosen",))` and
`mfpo_train.model.sequence_logps` (token-mean NLL of the answer).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.efficacy import shapes


TASK_TOKENS = ("USER", "ASSISTANT", "What", " color", *(f" {s}" for s in shapes.SHAPES), *shapes.COLORS)


def build_model(hidden: int, layers: int, seed: int, task_tokens: bool = True):
    import torch

    from mfpo_train.tiny import build_tiny_llava

    model, processor = build_tiny_llava(image_size=shapes.SIZE, hidden_size=hidden, num_layers=layers, seed=seed)
    if not task_tokens:
        return model, processor
    processor.tokenizer.add_tokens(list(TASK_TOKENS))
    torch.manual_seed(seed)
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    return model, processor


def batches(rows: list, size: int):
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def sft(args, seed: int, path: Path) -> dict:
    """Train and save the seed's SFT model to `path`; return {"sft_final_loss": mean of the last 20 losses}."""
    import torch

    from mfpo_train.collator import MFPOCollator
    from mfpo_train.model import sequence_logps

    model, processor = build_model(args.hidden, args.layers, seed, args.task_tokens)
    collator = MFPOCollator(processor, max_length=None, sequences=("chosen",))
    scenes = shapes.make_scenes(seed, "sft", args.sft_examples, args.p_prior)
    collated = [collator([shapes.chat_row(shapes.render(s)[0], s.question, s.asked.color) for s in chunk])
                for chunk in batches(scenes, args.sft_batch)]  # collated once; epochs reuse them in a seeded order
    opt = torch.optim.AdamW(model.parameters(), lr=args.sft_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    model.train()
    losses = []
    for _ in range(args.sft_steps):
        if not order:
            order = torch.randperm(len(collated), generator=gen).tolist()
        batch = collated[order.pop()]
        logps = sequence_logps(model, batch)  # summed over the answer tokens ("red</s>")
        loss = -(logps / batch["completion_mask"].sum(-1)).mean()  # token-mean NLL
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.save_pretrained(path)
    processor.save_pretrained(path)
    tail = losses[-20:]
    return {"sft_final_loss": sum(tail) / len(tail)}
