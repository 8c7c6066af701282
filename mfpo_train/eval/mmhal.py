"""MMHal-Bench (Sun et al., 2023, LLaVA-RLHF): 96 questions about OpenImages pictures, scored 0-6 by a text-only judge.

The protocol of LLaVA-RLHF's `Eval/eval_gpt_mmhal.py` (RLAIF-V's copy is the same): for each question
the judge reads `TEMPLATE` filled with the image's content tags (joined by ", "), the question, the
human answer and the model's answer, at temperature 0. Its review is read as the one "rating: k"
(k = 0..6, case-insensitive) it contains; a review with none or several is scored 0 (the reference
does the same and prints a warning; here they are counted in `unparsed`). Score = mean rating (2
decimals, the number papers print, e.g. 2.69 for LLaVA-1.5-7B + MFPO); hallucination rate = share of
ratings below 3 (x100 here, one decimal; the reference prints the fraction); one mean per question type.

The reference judge was GPT-4 (gpt-4-0314), now retired; the judge never sees the image. `--judge MODEL`
takes any local Hugging Face causal LM (greedy decoding, its chat template when it has one) or a model
behind an OpenAI-compatible endpoint (`--judge-url`; the key is read from an environment variable and
never written or printed). The result names the judge, and the table labels the column with it: a
number from another judge is not the paper's number.

The question file is MMHal-Bench's `response_template.json` (a JSON list of records with
`question_type`, `question`, `gt_answer`, `image_content`, and `image_src` or `image_path`); its
licence is not stated, so it is not shipped: pass the file and the folder of its images.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mfpo_data.errors import MfpoError
from mfpo_data.scorers.io import MAX_ANSWER_CHARS, numbered_records, read_text, shown, text_field, where
from mfpo_data.scorers.results import make_result
from mfpo_data.secrets import scrub


TEMPLATE = 'Please act as an impartial and objective judge and evaluate the quality of the response provided by a Large Multimodal Model (LMM) to the user question. Your evaluation should be mainly based on whether the response is informative, and whether the response contains any hallucination. Hallucination, in this context, refers to a situation where the LMM generates a response that includes information not present or implied in the image or previous conversation. A hallucination could be a false claim about an object, action, emotion, or any other detail that is not grounded in the image.\n\nFor clarity, consider these examples:\n\n### Example 1:\n- Image Contents: Lynx, Cat\n- Question: How many cats can you see in this image?\n- Standard Human-Generated Answer: There are two cats visible in the image.\n- LMM Response to Evaluate: There is one cat in the image.\n- Analysis: The LMM\'s response is false because it claims there is only one cat in the image, when in fact there are two.\n- Hallucination: Yes.\n\n### Example 2:\n- Image Contents: Tree, Plant, Panda, Animal\n- Question: What can you see from this photo?\n- Standard Human-Generated Answer: In this photo we can see branches. We can see a panda on a branch. The background is blurry.\n- LMM Response to Evaluate: In the photo, I can see a large black and white panda sitting on a tree branch. The image captures the panda\'s unique appearance and its natural habitat, showcasing the beauty and rarity of these animals.\n- Analysis: The LMM\'s response is not false because it does not make any false claims about the image contents. For example, it does not claim that the panda is eating bamboo.\n- Hallucination: No.\n\n### Example 3:\n- Image Contents: Fashion accessory, Mammal, Dog, Umbrella\n- Question: Describe this image in details.\n- Standard Human-Generated Answer: In this picture I can see a dog laying under a yellow umbrella on a beach, and there is a rope on the right side. In the background I can see few persons talking or lying. At the top of the image, I can see the blue and clear sky.\n- LMM Response to Evaluate: The image features a brown dog laying on the sand at the beach, underneath a yellow umbrella. The dog is positioned near the water, and there are people in the background. The beach is sandy, and the sun is shining, creating a pleasant atmosphere. The dog is enjoying the shade provided by the umbrella, which is a common way to protect pets from the sun\'s harmful rays. The presence of people in the background suggests that the beach is a popular spot for leisure activities, such as sunbathing, swimming, and relaxing.\n- Analysis: The LMM\'s response is false because it claims that the dog is positioned near the water, but there is no water in the image.\n- Hallucination: Yes.\n\n### Example 4:\n- Image Contents: Clothing, Luggage and bags, Man, Building, Woman, Person\n- Question: Where is this photo taken?\n- Standard Human-Generated Answer: From the slogan "Welcome to Houston, Texas", we can infer that this photo is taken at an airport in Houston, Texas.\n- LMM Response to Evaluate: This photo is taken at an airport, specifically at the entrance of a terminal. However, the specific location of this airport cannot be determined from the image.\n- Analysis: Although the LMM\'s response does not explicitly mention the location "Houston, Texas" and does not perfectly answer the question, it makes no false claims about the image contents. Therefore, this response is not considered hallucination. It is OK if the LMM fails to directly answer the question, expresses uncertainty, or cannot include all the objects or details in the human-generated answer.\n- Hallucination: No.\n\n### Example 5:\n- Image Contents: Tree, Tower\n- Question: What environmental concerns are involved in this photo?\n- Standard Human-Generated Answer: This photo shows a smokestack emitting smoke. It may cause severe air pollution which threatens human health.\n- LMM Response to Evaluate: In the photo, there are several environmental concerns related to the smokestack emitting smoke. The smoke from the smokestack is a byproduct of industrial processes, which can contribute to air pollution, climate change, and negative impacts on human health. The smoke contains harmful pollutants, such as particulate matter, sulfur dioxide, nitrogen oxides, and carbon monoxide, which can lead to respiratory problems, heart disease, and other health issues. Additionally, the smoke contributes to the greenhouse effect, which can lead to global warming and climate change. The smokestack\'s emissions also affect the environment, as they can harm wildlife, vegetation, and ecosystems. Therefore, it is essential to address these environmental concerns by implementing measures to reduce emissions and promote sustainable practices in industrial processes.\n- Analysis: Although the LMM\'s response is significantly longer than the standard human-generated answer, it does not contain any false claims about the image contents. Instead, it provides additional general information about the environmental concerns, which can be inferred from the smoke emission. Such detailed analysis or reasoning should be considered as a positive aspect, as long as it contains no false claims.\n- Hallucination: No.\n\nWith these examples in mind, please help me evaluate whether the response by the LMM is informative, and whether hallucination exists in it, based on the comparison between the LMM\'s response and the factual information provided in the image contents, question, and the standard human-generated answer below.\n\nPlease note that the standard human-generated answer may only contain factual information but may not give a detailed analysis. Also, the standard human-generated answer may not be completely comprehensive in describing all the objects and their attributes, so please be a bit more cautious during evalutation. LMM\'s detailed analysis or reasoning should be encouraged.\n\nTo evaluate the LMM responses, first, begin your evaluation by providing a short explanation. Second, after providing your explanation, you must rate the response by choosing from the following options:\n- Rating: 6, very informative with good analysis or reasoning, no hallucination\n- Rating: 5, very informative, no hallucination\n- Rating: 4, somewhat informative, no hallucination\n- Rating: 3, not informative, no hallucination\n- Rating: 2, very informative, with hallucination\n- Rating: 1, somewhat informative, with hallucination\n- Rating: 0, not informative, with hallucination\n\n### Image Contents\n{}\n\n### Question\n{}\n\n### Standard Human-Generated Answer\n{}\n\n### LMM Response to Evaluate\n{}\n'
REFERENCE_JUDGE = "gpt-4-0314"
FIELDS = ("question_type", "question", "gt_answer", "image_content")


def read_mmhal_questions(path: str | Path) -> list[dict]:
    """MMHal-Bench's question file (`response_template.json`): every record needs `FIELDS` and an image name."""
    path = Path(path)
    what = "MMHal-Bench question file (response_template.json)"
    if not read_text(path, what).lstrip().startswith("["):
        raise MfpoError(f"{shown(path)}: expected a JSON list of MMHal-Bench records")
    records = numbered_records(path, FIELDS, what)
    if not records:
        raise MfpoError(f"{shown(path)}: expected a JSON list of MMHal-Bench records")
    out = []
    for i, (line, row) in enumerate(records):
        text = {k: text_field(row, (k,), path, line) for k in ("question_type", "question", "gt_answer")}
        image = text_field(row, ("image_path", "image_src"), path, line)
        if not image:
            raise MfpoError(f"{where(path, line)}: needs 'image_path' or 'image_src'")
        content = row["image_content"]
        if not isinstance(content, list) or not all(isinstance(c, str) for c in content):
            raise MfpoError(f"{where(path, line)}: 'image_content' must be a list of strings")
        out.append({"id": i, **text, "image_content": content, "image": Path(image).name})
    return out


def read_mmhal_answers(path: str | Path, n: int) -> list[dict]:
    """The model's answers, in the questions' order: the template with `model_answer` filled (a JSON list),
    or JSON lines with `answer`, `text` or `model_answer` (RLAIF-V's `merge_template_answer`: line i
    answers question i, "Assistant:" removed)."""
    path = Path(path)
    rows = numbered_records(path, (), "MMHal-Bench answers file")
    if len(rows) != n:
        raise MfpoError(f"{shown(path)}: {len(rows)} answers for {n} questions (one per question, in the questions' "
                        "order)")
    out = []
    for i, (line, row) in enumerate(rows):
        text = text_field(row, ("answer", "text", "model_answer"), path, line, limit=MAX_ANSWER_CHARS)
        out.append({"id": i, "answer": text.replace("Assistant:", "").strip()})
    return out


def judge_prompt(question: Mapping, answer: str) -> str:
    """The reference's judge input for one question and answer."""
    return TEMPLATE.format(", ".join(question["image_content"]), question["question"], question["gt_answer"], answer)


def parse_rating(review: str) -> int | None:
    """The rating a review gives, or None when it gives none or several ("rating: k", k = 0..6)."""
    found = [s for s in range(7) if f"rating: {s}" in review.lower()]
    return found[0] if len(found) == 1 else None


def score_mmhal(questions: Sequence[Mapping], answers: Sequence[Mapping], reviews: Sequence[str],
                judge: Mapping[str, str]) -> dict:
    """Score, hallucination rate and per-type means of the judge's `reviews` (one per question, in order).

    `answers` are `{"id", "answer"}` in the same order; `judge` describes the judge (`judge_info`).
    """
    if not (len(questions) == len(answers) == len(reviews)) or not questions:
        raise MfpoError(f"mmhal: {len(questions)} questions, {len(answers)} answers, {len(reviews)} reviews")
    scores, details, unparsed = [], [], 0
    for q, a, review in zip(questions, answers, reviews, strict=True):
        rating = parse_rating(review)
        unparsed += rating is None
        scores.append(0 if rating is None else rating)
        details.append({"id": q["id"], "question_type": q["question_type"], "answer": a["answer"],
                        "rating": rating, "review": review})
    by_type: dict[str, list[int]] = {}
    for q, s in zip(questions, scores, strict=True):
        by_type.setdefault(q["question_type"], []).append(s)
    n = len(scores)
    metrics = {
        "score": round(sum(scores) / n, 2),
        "hallucination_rate": round(100 * sum(s < 3 for s in scores) / n, 1),
        "per_type": {t: round(sum(v) / len(v), 2) for t, v in by_type.items()},
        "n": n,
        "unparsed": unparsed,
        "judge": dict(judge),
    }
    settings = {"judge": judge.get("label"), "template": "LLaVA-RLHF eval_gpt_mmhal.py", "complete": n == 96}
    return make_result("mmhal", metrics, ids=[q["id"] for q in questions], settings=settings, details=details)


# -- judges ---------------------------------------------------------------------------------------
def public_url(url: str) -> str:
    """`url` without credentials, query or fragment (what may be written into results)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def judge_info(model: str, url: str | None = None) -> dict[str, str]:
    """What names a judge in results.json and the table: model, where it runs, and a label."""
    if url:
        where = public_url(url)
        return {"model": model, "endpoint": where, "label": f"{model} @ {urlsplit(where).netloc}"}
    return {"model": model, "endpoint": "local", "label": f"{Path(model).name if Path(model).exists() else model} (local)"}


class LocalJudge:
    """A Hugging Face causal LM as the judge: greedy, one review per prompt, its chat template when it has one."""

    def __init__(self, model: str, *, max_new_tokens: int = 512, device: str = "cpu", dtype: str = "auto",
                 revision: str | None = None, trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, revision=revision,
                                                           trust_remote_code=trust_remote_code)
            torch_dtype = "auto" if dtype == "auto" and device != "cpu" else getattr(torch, "float32" if dtype == "auto" else dtype)
            self.model = AutoModelForCausalLM.from_pretrained(model, revision=revision, dtype=torch_dtype,
                                                              trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise MfpoError(f"cannot load judge {model}: {str(e).strip().splitlines()[0]}") from e
        self.model.to(device).eval().requires_grad_(False)
        self.max_new_tokens = max_new_tokens

    def _text(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return prompt

    def review(self, prompt: str) -> str:
        import torch

        enc = self.tokenizer(self._text(prompt), return_tensors="pt").to(next(self.model.parameters()).device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens,
                                      pad_token_id=pad, temperature=None, top_p=None, top_k=None)
        return self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


class EndpointJudge:
    """A model behind an OpenAI-compatible `/chat/completions` endpoint, at temperature 0."""

    def __init__(self, model: str, url: str, *, key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
                 max_tokens: int | None = None):
        # credentials written into the URL are not sent (urllib would take them for the host): use key_env
        self.model, self.url, self.timeout, self.max_tokens = model, public_url(url).rstrip("/"), timeout, max_tokens
        self._key = os.environ.get(key_env) or None
        self.served_models: set[str] = set()

    def review(self, prompt: str) -> str:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.0}
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(f"{self.url}/chat/completions", data=json.dumps(body).encode(),
                                         headers=headers, method="POST")
        where = public_url(self.url)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - the user's URL
                reply = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            raise MfpoError(f"judge endpoint {where}: HTTP {e.code} {scrub(str(e.reason), self._key)}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise MfpoError(f"judge endpoint {where}: {scrub(str(getattr(e, 'reason', e)), self._key)}") from None
        except json.JSONDecodeError:
            raise MfpoError(f"judge endpoint {where}: the reply is not JSON") from None
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise MfpoError(f"judge endpoint {where}: no choices[0].message.content in the reply") from None
        self.served_models.add(str(reply.get("model", self.model)))
        return content if isinstance(content, str) else ""


def make_judge(model: str, url: str | None = None, *, key_env: str = "OPENAI_API_KEY", max_new_tokens: int = 512,
               device: str = "cpu", dtype: str = "auto"):
    """An endpoint judge when `url` is given, else a local causal LM."""
    if url:
        return EndpointJudge(model, url, key_env=key_env, max_tokens=max_new_tokens)
    return LocalJudge(model, max_new_tokens=max_new_tokens, device=device, dtype=dtype)


def review_all(judge, questions: Sequence[Mapping], answers: Sequence[Mapping], *, progress: bool = True) -> list[str]:
    """The judge's review of every answer, in order, with a progress bar."""
    from tqdm.auto import tqdm

    return [judge.review(judge_prompt(q, a["answer"]))
            for q, a in tqdm(list(zip(questions, answers, strict=True)), desc="mmhal judge", unit="answer",
                             disable=not progress, dynamic_ncols=True)]
