"""The benchmarks `mfpo-eval run` knows: their items (image + prompt) and how their answers are scored.

| name       | items                                                            | scorer                       |
|------------|------------------------------------------------------------------|------------------------------|
| objhal     | Object HalBench: RLAIF-V's 300 val2014 ids and description prompts (a seeded set of the folder otherwise) | RLAIF-V's rule CHAIR (or the reference CHAIR) |
| chair-coco | `chair_images` images of the COCO split, "Please describe this image in detail." | CHAIR, reference synonyms |
| pope       | POPE's official random / popular / adversarial files on val2014 (seeded questions otherwise) | POPE, per split, mean, pooled |
| amber      | AMBER's queries (generative and yes/no) with its images          | AMBER                        |
| mmhal      | MMHal-Bench's 96 questions with their images                    | a judge model's 0-6 ratings  |
| probes     | MFPO's log-prob probes on an mfpo dataset (no generation; `probes.py`) |                        |

Prompts are the benchmarks' own: POPE's question text (plus the convention's suffix), AMBER's query,
Object HalBench's prompts, MMHal's question, each sent as one user turn [image, text] through the
model's chat template. Images of a COCO split are read from `coco_root/<split>/<file_name>` (the
bundled sample: `sample/`).

Every default is the reference protocol; each deviation is a named option, recorded in the
benchmark's `settings` (results.json) and described in words by `describe` (results.md, the table):
`fixed_vocabulary` (CHAIR and Object HalBench), `objhal_scorer`, `pope_source` (official files or
seeded questions), `pope_convention`, `pope_labels` (RePOPE), `amber_nouns`, `amber_similarity`, `judge`.
Each POPE split's result records `questions_sha256` as `mfpo-eval pope` does (its ids are 1..3000 in every
split): the sha256 of the question file read (the official file's own for the shipped ones), or of the
file written under benchmarks/ for built questions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mfpo_data.errors import MfpoError


BENCHMARKS = ("objhal", "chair-coco", "pope", "amber", "mmhal", "probes")
# Options that change how answers are scored, not which answers are generated (left out of run.json).
SCORING_OPTIONS = ("fixed_vocabulary", "objhal_scorer", "amber_nouns", "amber_similarity", "judge", "judge_url",
                   "judge_key_env", "judge_max_new_tokens")
CHAIR_PROMPT = "Please describe this image in detail."
AMBER_SOURCE = "https://github.com/junyangwang0410/AMBER"


@dataclass
class SuiteOptions:
    """Where each benchmark's files are and how its item set is drawn (all recorded in results.json)."""

    coco_root: str | None = None  # None: the COCO sample bundled with mfpo_data (split "sample")
    coco_split: str | None = None  # default: "sample" for the bundled sample, else "val2014"
    seed: int = 0
    objhal_questions: str | None = None  # RLAIF-V's obj_halbench_300_with_image.jsonl
    objhal_images: int | None = None  # build a set of this many images instead of the shipped 300 ids
    objhal_scorer: str = "rlaifv"  # rlaifv (RLAIF-V's rule path) | chair (the reference CHAIR pipeline)
    fixed_vocabulary: bool = False  # CHAIR and Object HalBench: fix what the reference cannot match
    chair_images: int = 500
    pope_questions: str | None = None  # a folder with POPE's coco_pope_{random,popular,adversarial}.json
    pope_source: str = "auto"  # official | build | auto (the shipped official files on val2014, else build)
    pope_convention: str = "pope"  # pope | llava | lmms-eval | vlmevalkit (pope.CONVENTIONS)
    pope_labels: str = "pope"  # pope | repope (RePOPE's relabelled files from repope_dir)
    repope_dir: str | None = None  # RePOPE's annotations/ folder (coco_repope_<split>.json)
    pope_images: int | None = 500
    pope_min_objects: int = 3
    pope_per_image: int = 3
    amber_root: str | None = None  # AMBER's data/ folder (annotations.json, relation.json, safe_words.txt, query/)
    amber_images: str | None = None  # the folder of AMBER_*.jpg
    amber_query: str = "all"  # all | generative | discriminative (data/query/query_<name>.json)
    amber_nouns: str = "auto"  # auto | nltk | aptagger | rules (tagging.METHODS)
    amber_similarity: str = "auto"  # auto | spacy | exact
    mmhal_questions: str | None = None  # MMHal-Bench's response_template.json
    mmhal_images: str | None = None  # the folder of its images
    judge: str | None = None  # MMHal's judge: a local causal LM (Hub id or folder), or a model name at judge_url
    judge_url: str | None = None  # an OpenAI-compatible endpoint (.../v1)
    judge_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the endpoint's key
    judge_max_new_tokens: int = 512
    probe_data: str | None = None  # an mfpo dataset: build folder, published folder or Hub id
    probe_split: str | None = None  # default: test when the dataset has one, else train
    probe_max_samples: int | None = None

    @property
    def bundled(self) -> bool:
        return self.coco_root is None

    @property
    def split(self) -> str:
        return self.coco_split or ("sample" if self.bundled else "val2014")

    def to_dict(self) -> dict:
        return asdict(self)

    def answer_settings(self) -> dict:
        """The options that decide the generated answers (the probes are recomputed on every run, and
        the scoring options do not change the answers)."""
        return {k: v for k, v in asdict(self).items() if not k.startswith("probe_") and k not in SCORING_OPTIONS}


@dataclass
class Part:
    """One answers file: `items` to generate for, scored together."""

    name: str  # e.g. "pope-random"; the answers file is <name>.answers.jsonl
    items: list[dict]


@dataclass
class Benchmark:
    name: str
    parts: list[Part]
    score: Callable[[dict[str, list[dict]]], dict]  # {part name: answer records} -> the benchmark's result
    files: dict[str, list[dict]]  # question files to write once under OUT/benchmarks/ (name -> rows)
    settings: dict[str, Any]
    load_judge: Callable[[str], Any] | None = None  # MMHal: the judge model on a device, passed to score(scorer=)


def prepare(name: str, opts: SuiteOptions) -> Benchmark:
    """The items and scorer of benchmark `name` (not `probes`); missing files are one-line errors."""
    builders = {"objhal": _objhal, "chair-coco": _chair_coco, "pope": _pope, "amber": _amber, "mmhal": _mmhal}
    if name not in builders:
        raise MfpoError(f"unknown benchmark {name!r} (choose from {', '.join(BENCHMARKS)})")
    return builders[name](opts)


# -- COCO-based --------------------------------------------------------------------------------------
def _coco(opts: SuiteOptions):
    from mfpo_data.scorers.coco import read_coco

    return read_coco(opts.coco_root, opts.split)


def _image_dir(opts: SuiteOptions) -> Path:
    from mfpo_data.scorers.coco import bundled_coco_root

    root = Path(opts.coco_root).expanduser() if opts.coco_root else bundled_coco_root()
    folder = root / opts.split
    if not folder.is_dir():
        from mfpo_data.scorers.io import shown

        raise MfpoError(f"COCO images not found: {shown(folder)} (download {opts.split}.zip from "
                        f"https://cocodataset.org and unpack it into {shown(root)})")
    return folder


def _image_path(folder: Path, file_name: str, source: str = "the question file") -> Path:
    """The image `file_name` of a question, inside `folder` (a path that leaves it is refused, in one line)."""
    from mfpo_data.imaging import ImageError, confined_path
    from mfpo_data.scorers.io import shown

    try:
        path = confined_path(folder, file_name)
    except ImageError:
        raise MfpoError(f"{source}: image {shown(file_name)!r} leaves the image folder {shown(folder)}; "
                        "image paths must stay inside it") from None
    if not path.is_file():
        raise MfpoError(f"image not found: {shown(path)} (named by {source})")
    return path


def _caption_items(coco, questions: list[dict], opts: SuiteOptions) -> list[dict]:
    folder = _image_dir(opts)
    return [{"key": str(q["image_id"]), "image_id": q["image_id"], "prompt": q["question"],
             "image": _image_path(folder, coco.images[q["image_id"]], f"COCO image {q['image_id']}")}
            for q in questions]


def _chair_scorer(coco, vocab, scorer: Callable, part: str):
    from mfpo_data.scorers.coco import chair_ground_truth

    def score(answers: dict[str, list[dict]]) -> dict:
        rows = [{k: a[k] for k in ("image_id", "answer", "text") if k in a} for a in answers[part]]
        truth = chair_ground_truth(coco, vocab, [r["image_id"] for r in rows])
        return scorer(rows, truth, vocab)

    return score


def _protocol(opts: SuiteOptions, default: str) -> str:
    return "fixed" if opts.fixed_vocabulary else default


def _objhal(opts: SuiteOptions) -> Benchmark:
    from mfpo_train.eval import objhal

    vocab = objhal.objhal_vocabulary(opts.objhal_scorer, fixed=opts.fixed_vocabulary)  # checks the names first
    coco = _coco(opts)
    if opts.objhal_questions:
        questions, source = objhal.read_objhal_questions(opts.objhal_questions), opts.objhal_questions
    elif opts.objhal_images is None and not opts.bundled:
        questions, source = objhal.objhal_questions(), "shipped RLAIF-V 300 ids"
        missing = [q["image_id"] for q in questions if q["image_id"] not in coco.images]
        if missing:
            raise MfpoError(f"objhal: {len(missing)} of the 300 Object HalBench images (e.g. {missing[0]}) are not in "
                            f"COCO split {opts.split!r}; point --coco-root at COCO 2014 with --coco-split val2014, "
                            "or draw a set from this folder with --objhal-images N")
    else:
        n = opts.objhal_images or sum(1 for objs in coco.objects.values() if objs)
        where = "the bundled COCO sample" if opts.bundled else f"COCO split {opts.split!r}"
        questions = objhal.build_objhal_questions(coco, images=n, seed=opts.seed)
        source = f"seeded: {n} images of {where}, not the 300 Object HalBench images"
    items = _caption_items(coco, questions, opts)
    settings = {"source": source, "coco_split": opts.split, "scorer": opts.objhal_scorer, "protocol": vocab.protocol,
                "objects": "rules"}
    return Benchmark("objhal", [Part("objhal", items)], _chair_scorer(coco, vocab, objhal.score_objhal, "objhal"),
                     {"objhal.questions.jsonl": questions}, settings)


def _chair_coco(opts: SuiteOptions) -> Benchmark:
    from mfpo_data.scorers.chair import load_vocabulary, score_chair
    from mfpo_train.eval import objhal

    coco = _coco(opts)
    eligible = sum(1 for objs in coco.objects.values() if objs)
    n = min(opts.chair_images, eligible) if opts.bundled else opts.chair_images
    questions = objhal.build_objhal_questions(coco, images=n, seed=opts.seed, prompts=[CHAIR_PROMPT])
    vocab = load_vocabulary("coco", _protocol(opts, "reference"))
    items = _caption_items(coco, questions, opts)
    return Benchmark("chair-coco", [Part("chair-coco", items)],
                     _chair_scorer(coco, vocab, lambda rows, gt, v: score_chair(rows, gt, v), "chair-coco"),
                     {"chair-coco.questions.jsonl": questions}, {"images": n, "prompt": CHAIR_PROMPT,
                                                                  "coco_split": opts.split, "protocol": vocab.protocol})


def _pope_questions(opts: SuiteOptions) -> tuple[dict[str, list[dict]], dict]:
    """The three splits' questions and how they were obtained (official files, the user's, RePOPE's, or built)."""
    from mfpo_data.scorers import pope

    if opts.pope_source not in ("auto", "official", "build"):
        raise MfpoError(f"--pope-source must be auto, official or build, got {opts.pope_source!r}")
    if opts.pope_labels not in ("pope", "repope"):
        raise MfpoError(f"--pope-labels must be pope or repope, got {opts.pope_labels!r}")
    questions: dict[str, list[dict]] = {}
    files: dict[str, dict] = {}
    if opts.pope_labels == "repope":
        _refuse_without_val2014(opts, "--pope-labels repope: RePOPE's files")
        if not opts.repope_dir:
            raise MfpoError("--pope-labels repope needs --repope-dir: the annotations/ folder of "
                            "https://github.com/YanNeu/RePOPE (coco_repope_{random,popular,adversarial}.json)")
        for split in pope.SAMPLINGS:
            path = Path(opts.repope_dir).expanduser() / f"coco_repope_{split}.json"
            questions[split] = pope.read_repope_questions(path, split)
            sha = pope.file_sha256(path)
            files[split] = {"file": str(path), "sha256": sha, "published": sha == pope.REPOPE_SHA256[split],
                            "questions": len(questions[split])}
        return questions, {"source": "RePOPE labels", "files": files}
    if opts.pope_questions:
        root = Path(opts.pope_questions).expanduser()
        for split in pope.SAMPLINGS:
            path = root / f"coco_pope_{split}.json"
            if not path.is_file():
                raise MfpoError(f"POPE questions not found: {path} (download output/coco/coco_pope_{split}.json "
                                f"from https://github.com/RUCAIBox/POPE into {root})")
            questions[split] = pope.read_pope_questions(path)
            sha = pope.file_sha256(path)
            pope.file_split(path, sha)  # an official file of another split under this name is refused
            files[split] = {"file": str(path), "sha256": sha, "official": sha == pope.OFFICIAL_SHA256[split],
                            "questions": len(questions[split])}
        official = all(f["official"] for f in files.values())
        if official:
            _refuse_without_val2014(opts, "--pope-questions: POPE's official files")
        return questions, {"source": "official POPE files" if official else "user's POPE files (not the official ones)",
                           "files": files}
    official = opts.pope_source == "official" or (opts.pope_source == "auto" and opts.split == "val2014")
    if official:
        _refuse_without_val2014(opts, "--pope-source official: POPE's official files")
        for split in pope.SAMPLINGS:
            questions[split] = pope.official_questions(split)
            files[split] = {"file": "shipped", "sha256": pope.OFFICIAL_SHA256[split], "official": True,
                            "questions": len(questions[split])}
        return questions, {"source": "official POPE files", "files": files}
    coco = _coco(opts)
    # the bundled sample has 15 images, one of them with 3 categories: ask about every image, 1 object each
    kwargs = (dict(images=None, min_objects=1, per_image=1) if opts.bundled else
              dict(images=opts.pope_images, min_objects=opts.pope_min_objects, per_image=opts.pope_per_image))
    for split in pope.SAMPLINGS:
        questions[split] = pope.build_pope_questions(coco, split, seed=opts.seed, **kwargs)
        files[split] = {"file": "built", "sha256": pope.questions_sha256(questions[split]), "official": False,
                        "questions": len(questions[split])}
    return questions, {"source": f"seeded questions built from COCO split {opts.split} (not POPE's files)",
                       "seed": opts.seed, **kwargs, "files": files}


def _refuse_without_val2014(opts: SuiteOptions, what: str) -> None:
    """POPE's official questions (and RePOPE's) ask about COCO val2014 images, which the bundled sample lacks."""
    if opts.bundled:
        raise MfpoError(f"{what} ask about COCO val2014 images: give --coco-root (a COCO folder holding val2014/); "
                        "without it only the bundled 15-image sample is here (--pope-source build asks about it)")


def _pope(opts: SuiteOptions) -> Benchmark:
    from mfpo_data.scorers import pope

    conv = pope.convention(opts.pope_convention)
    questions, settings = _pope_questions(opts)
    folder = _image_dir(opts)
    paths: dict[str, Path] = {}  # POPE asks about each of its images 18 times: each is found once

    def image(q: dict, split: str) -> Path:
        if q["image"] not in paths:
            paths[q["image"]] = _image_path(folder, q["image"], f"POPE {split} question {q['question_id']!r}")
        return paths[q["image"]]

    parts = [Part(f"pope-{s}", [{"key": str(q["question_id"]), "question_id": q["question_id"],
                                 "prompt": q["text"] + conv.suffix, "image": image(q, s)} for q in qs])
             for s, qs in questions.items()]

    def score(answers: dict[str, list[dict]]) -> dict:
        given = {s: [{"question_id": a["question_id"], "answer": a["answer"]} for a in answers[f"pope-{s}"]]
                 for s in questions}
        out = {s: pope.score_pope(questions[s], given[s], parser=conv.parser, split=s) for s in questions}
        for s in questions:  # as the `pope` command records them: which file, not only which ids (1..3000 in each);
            # the answers are checked: every written answer is read back against its item's prompt
            out[s]["meta"]["settings"].update(convention=conv.name, questions_sha256=settings["files"][s]["sha256"],
                                              official=settings["files"][s].get("official", False),
                                              answers_checked=True)
        out["mean"] = pope.mean_over_splits(out)
        out["pooled"] = pope.pooled_over_splits(questions, given, conv.parser)
        return out

    files = {f"coco_pope_{s}.json": qs for s, qs in questions.items()}
    settings.update(convention=conv.name, parser=conv.parser, prompt_suffix=conv.suffix, headline=conv.headline,
                    labels=opts.pope_labels)
    return Benchmark("pope", parts, score, files, settings)


def _amber(opts: SuiteOptions) -> Benchmark:
    from mfpo_data.scorers.io import id_field, numbered_records, shown, text_field
    from mfpo_train.eval import amber
    from mfpo_train.eval.tagging import resolve

    if not opts.amber_root or not opts.amber_images:
        raise MfpoError(f"amber needs AMBER's files: clone {AMBER_SOURCE} and pass --amber-root AMBER/data, and "
                        "download its images (the README's Google Drive link) and pass --amber-images DIR")
    nouns = resolve(opts.amber_nouns)
    similarity = amber.resolve_similarity(opts.amber_similarity)
    data = amber.load_amber(opts.amber_root)
    query_file = Path(opts.amber_root) / "query" / f"query_{opts.amber_query}.json"
    what = f"AMBER query file (data/query/query_{opts.amber_query}.json of {AMBER_SOURCE})"
    images = Path(opts.amber_images)
    if not images.is_dir():
        raise MfpoError(f"--amber-images: folder not found: {shown(images)} (AMBER's images, from its README)")
    items, seen = [], set()
    for line, q in numbered_records(query_file, ("id", "image", "query"), what):
        item_id = id_field(q, "id", query_file, line, text=False)
        if item_id in seen:
            raise MfpoError(f"{shown(query_file)}:{line}: id {item_id} appears again")
        seen.add(item_id)
        image = _image_path(images, text_field(q, ("image",), query_file, line), f"{shown(query_file)}:{line}")
        items.append({"key": str(item_id), "id": item_id, "prompt": text_field(q, ("query",), query_file, line),
                      "image": image})

    def score(answers: dict[str, list[dict]]) -> dict:
        return amber.score_amber([{"id": a["id"], "response": a["answer"]} for a in answers["amber"]], data,
                                 similarity=similarity, nouns=nouns)

    settings = {"query": opts.amber_query, "nouns": nouns, "similarity": similarity}
    return Benchmark("amber", [Part("amber", items)], score, {}, settings)


def _mmhal(opts: SuiteOptions) -> Benchmark:
    from mfpo_train.eval import mmhal

    if not opts.mmhal_questions or not opts.mmhal_images:
        raise MfpoError("mmhal needs MMHal-Bench's files: --mmhal-questions response_template.json and "
                        "--mmhal-images DIR (the dataset Shengcao1006/MMHal-Bench)")
    if not opts.judge:
        raise MfpoError("mmhal needs a judge: --judge MODEL (a local causal LM, or a model at --judge-url URL); "
                        f"the reference judge, {mmhal.REFERENCE_JUDGE}, is retired")
    questions = mmhal.read_mmhal_questions(opts.mmhal_questions)
    folder = Path(opts.mmhal_images).expanduser()
    if not folder.is_dir():
        raise MfpoError(f"--mmhal-images: folder not found: {folder}")
    items = [{"key": str(q["id"]), "id": q["id"], "prompt": q["question"], "image": _image_path(folder, q["image"])}
             for q in questions]
    judge = mmhal.judge_info(opts.judge, opts.judge_url)

    def load_judge(device: str = "cpu"):
        return mmhal.make_judge(opts.judge, opts.judge_url, key_env=opts.judge_key_env,
                                max_new_tokens=opts.judge_max_new_tokens, device=device)

    def score(answers: dict[str, list[dict]], *, scorer=None, progress: bool = True) -> dict:
        scorer = load_judge() if scorer is None else scorer
        reviews = mmhal.review_all(scorer, questions, answers["mmhal"], progress=progress)
        result = mmhal.score_mmhal(questions, answers["mmhal"], reviews, judge)
        served = sorted(getattr(scorer, "served_models", set()) - {opts.judge})
        if served:  # the reference retries until the endpoint answers with the model it asked for
            result["judge"]["served_by"] = served
        return result

    settings = {"judge": judge, "questions": len(questions), "reference_judge": mmhal.REFERENCE_JUDGE}
    return Benchmark("mmhal", [Part("mmhal", items)], score, {}, settings, load_judge)


# -- what the numbers are, in words ------------------------------------------------------------------
def describe(name: str, settings: dict) -> str:
    """One sentence saying how a benchmark's numbers were computed (results.md, the table notes)."""
    if name == "objhal":
        how = {"rlaifv": "RLAIF-V's rule path (WordNet lemmas), RLAIF-V's refined synonyms",
               "chair": "the reference CHAIR (pattern singulars), RLAIF-V's refined synonyms"}
        if settings.get("protocol") == "fixed":  # its own singulars: neither WordNet's lemmas nor pattern's
            described = ("CHAIR with the fixed vocabulary (RLAIF-V's refined synonyms stripped and lower-cased, inflect "
                         "singulars; not a reference's numbers)")
        else:
            described = how.get(settings.get("scorer"), str(settings.get("scorer")))
        return (f"Object HalBench: {described}; objects found "
                f"by rules, not by a GPT judge, so not comparable with GPT-judged tables; {settings.get('source')}.")
    if name == "chair-coco":
        vocab = ("fixed vocabulary (not the reference's: dead synonym entries revived, inflect singulars)"
                 if settings.get("protocol") == "fixed" else "the reference chair.py (pattern singulars)")
        return f"COCO CHAIR: {settings.get('images')} images, {vocab}."
    if name == "pope":
        headline = {"split": "per split", "mean": "headline = mean F1 of the three splits",
                    "pooled": "headline = F1 pooled over all rows"}[settings.get("headline", "split")]
        labels = "RePOPE's corrected labels, " if settings.get("labels") == "repope" else ""
        judge = ("; answers YOrN_Extraction cannot read count as 'no' (VLMEvalKit's exact matching: the LLM judge it "
                 "can ask about them is not run)" if settings.get("parser") == "yorn" else "")
        return (f"POPE: {labels}{settings.get('source')}; convention {settings.get('convention')!r} "
                f"(parser {settings.get('parser')!r}, {headline}){judge}; F1 and yes-ratio x100.")
    if name == "amber":
        sim = settings.get("similarity", "")
        sim_words = ("exact match, not the reference's 0.8 spaCy similarity" if sim == "exact"
                     else f"{sim} similarity > 0.8")
        nouns = {"nltk": "NLTK's tagger (the reference's)", "aptagger": "textblob-aptagger's perceptron tagger, "
                 "not NLTK's model", "rules": "rules instead of a tagger"}.get(settings.get("nouns"), settings.get("nouns"))
        return f"AMBER: nouns by {nouns}; {sim_words}."
    if name == "mmhal":
        judge = settings.get("judge", {})
        return (f"MMHal-Bench: judged by {judge.get('label')}, not the paper's {settings.get('reference_judge')}; "
                f"{settings.get('questions')} questions; score 0-6, hallucination rate in %.")
    return ""
