"""How a row's prompt and answer become model text: the processor's chat template, split where the answer starts.

`split_answer` is the one rendering that the trainer's collator (`mfpo_train.collator`) and the build's
image-reliance stage (`stages/s6_reliance.py`) share, so that a token the build scored is the token the
trainer weights. The answer's text is what the template adds after the prompt with its generation prompt
(end-of-turn tokens included); its tokens are `tokenizer(answer, add_special_tokens=False)`.
"""

from __future__ import annotations


def clean_messages(messages: list[dict]) -> list[dict]:
    """Arrow stores `{"type": "image", "text": None}`; templates expect no `text` key on image parts."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = [{k: v for k, v in part.items() if v is not None} for part in content]
        out.append({"role": m["role"], "content": content})
    return out


def apply_template(processor, messages: list[dict], add_generation_prompt: bool) -> str:
    tokenizer = getattr(processor, "tokenizer", processor)
    renderer = processor if getattr(processor, "chat_template", None) else tokenizer
    return renderer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def split_answer(processor, prompt: list[dict], answer: list[dict], row_id=None) -> tuple[str, str]:
    """(prompt text with the generation prompt, the answer's text as the template renders it after it)."""
    prompt = clean_messages(prompt)
    prompt_text = apply_template(processor, prompt, add_generation_prompt=True)
    full = apply_template(processor, prompt + clean_messages(answer), add_generation_prompt=False)
    if not full.startswith(prompt_text):
        raise ValueError("the chat template renders the prompt differently with and without the answer; "
                         f"cannot split prompt from answer (row {row_id!r})")
    return prompt_text, full[len(prompt_text) :]
