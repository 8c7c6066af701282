"""The benchmarks `mfpo-eval run` knows: their items (image + prompt) and how their answers are scored.

| name       | items                                                            | scorer                       |
|------------|------------------------------------------------------------------|------------------------------|
| objhal     | Object HalBench: RLAIF-V's 300 val2014 ids and description prompts (a seeded set of the folder otherwise) | CHAIR, refined synonyms |
| chair-coco | `chair_images` images of the COCO split, "Please describe this image in detail." | CHAIR, reference synonyms |
| pope       | POPE random / popular / adversarial questions built from the COCO split (or POPE's files) | POPE, per split and mean |
| amber      | AMBER's queries (generative and yes/no) with its images          | AMBER                        |
| probes     | MFPO's log-prob probes on an mfpo dataset (no generation; `probes.py`) |                        |

Prompts are the benchmarks' own: POPE's question text, AMBER's query, Object HalBench's prompts,
each sent as one user turn [image, text] through the model's chat template. Images of a COCO split
are read from `coco_root/<split>/<file_name>` (the bundled sample: `sample/`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mfpo_data.errors import MfpoError


BENCHMARKS = ("objhal", "chair-coco", "pope", "amber", "probes")
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
    chair_images: int = 500
    pope_questions: str | None = None  # a folder with POPE's coco_pope_{random,popular,adversarial}.json
    pope_images: int | None = 500
    pope_min_objects: int = 3
    pope_per_image: int = 3
    amber_root: str | None = None  # AMBER's data/ folder (annotations.json, relation.json, safe_words.txt, query/)
    amber_images: str | None = None  # the folder of AMBER_*.jpg
    amber_query: str = "all"  # all | generative | discriminative (data/query/query_<name>.json)
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
        """The options that decide the generated answers (the probes are recomputed on every run)."""
        return {k: v for k, v in asdict(self).items() if not k.startswith("probe_")}


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


def prepare(name: str, opts: SuiteOptions) -> Benchmark:
    """The items and scorer of benchmark `name` (not `probes`); missing files are one-line errors."""
    builders = {"objhal": _objhal, "chair-coco": _chair_coco, "pope": _pope, "amber": _amber}
    if name not in builders:
        raise MfpoError(f"unknown benchmark {name!r} (choose from {', '.join(BENCHMARKS)})")
    return builders[name](opts)


# -- COCO-based --------------------------------------------------------------------------------------
def _coco(opts: SuiteOptions):
    from mfpo_train.eval.coco import read_coco

    return read_coco(opts.coco_root, opts.split)


def _image_dir(opts: SuiteOptions) -> Path:
    from mfpo_train.eval.coco import bundled_coco_root

    root = Path(opts.coco_root).expanduser() if opts.coco_root else bundled_coco_root()
    folder = root / opts.split
    if not folder.is_dir():
        from mfpo_train.eval.io import shown

        raise MfpoError(f"COCO images not found: {shown(folder)} (download {opts.split}.zip from "
                        f"https://cocodataset.org and unpack it into {shown(root)})")
    return folder


def _image_path(folder: Path, file_name: str, source: str = "the question file") -> Path:
    """The image `file_name` of a question, inside `folder` (a path that leaves it is refused, in one line)."""
    from mfpo_data.imaging import ImageError, confined_path
    from mfpo_train.eval.io import shown

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
    from mfpo_train.eval.coco import chair_ground_truth

    def score(answers: dict[str, list[dict]]) -> dict:
        rows = [{"image_id": a["image_id"], "answer": a["answer"]} for a in answers[part]]
        truth = chair_ground_truth(coco, vocab, [r["image_id"] for r in rows])
        return scorer(rows, truth, vocab)

    return score


def _objhal(opts: SuiteOptions) -> Benchmark:
    from mfpo_train.eval import objhal
    from mfpo_train.eval.chair import load_vocabulary

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
        questions, source = objhal.build_objhal_questions(coco, images=n, seed=opts.seed), f"{n} images, seeded"
    vocab = load_vocabulary("refine")
    items = _caption_items(coco, questions, opts)
    return Benchmark("objhal", [Part("objhal", items)], _chair_scorer(coco, vocab, objhal.score_objhal, "objhal"),
                     {"objhal.questions.jsonl": questions}, {"source": source, "coco_split": opts.split})


def _chair_coco(opts: SuiteOptions) -> Benchmark:
    from mfpo_train.eval import objhal
    from mfpo_train.eval.chair import load_vocabulary, score_chair

    coco = _coco(opts)
    eligible = sum(1 for objs in coco.objects.values() if objs)
    n = min(opts.chair_images, eligible) if opts.bundled else opts.chair_images
    questions = objhal.build_objhal_questions(coco, images=n, seed=opts.seed, prompts=[CHAIR_PROMPT])
    vocab = load_vocabulary("coco")
    items = _caption_items(coco, questions, opts)
    return Benchmark("chair-coco", [Part("chair-coco", items)],
                     _chair_scorer(coco, vocab, lambda rows, gt, v: score_chair(rows, gt, v), "chair-coco"),
                     {"chair-coco.questions.jsonl": questions}, {"images": n, "prompt": CHAIR_PROMPT,
                                                                  "coco_split": opts.split})


def _pope(opts: SuiteOptions) -> Benchmark:
    from mfpo_train.eval import pope

    folder = _image_dir(opts)
    questions: dict[str, list[dict]] = {}
    if opts.pope_questions:
        root = Path(opts.pope_questions)
        for sampling in pope.SAMPLINGS:
            path = root / f"coco_pope_{sampling}.json"
            if not path.is_file():
                from mfpo_train.eval.io import shown

                raise MfpoError(f"POPE questions not found: {shown(path)} (download output/coco/coco_pope_{sampling}"
                                f".json from https://github.com/RUCAIBox/POPE into {shown(root)})")
            questions[sampling] = pope.read_pope_questions(path)
        settings = {"source": str(root)}
    else:
        coco = _coco(opts)
        # the bundled sample has 15 images, one of them with 3 categories: ask about every image, 1 object each
        kwargs = (dict(images=None, min_objects=1, per_image=1) if opts.bundled else
                  dict(images=opts.pope_images, min_objects=opts.pope_min_objects, per_image=opts.pope_per_image))
        for sampling in pope.SAMPLINGS:
            questions[sampling] = pope.build_pope_questions(coco, sampling, seed=opts.seed, **kwargs)
        settings = {"source": f"built from COCO split {opts.split}", "seed": opts.seed, **kwargs}
    parts = [Part(f"pope-{s}", [{"key": str(q["question_id"]), "question_id": q["question_id"], "prompt": q["text"],
                                 "image": _image_path(folder, q["image"], f"POPE {s} question {q['question_id']!r}")}
                                for q in qs])
             for s, qs in questions.items()]

    def score(answers: dict[str, list[dict]]) -> dict:
        out = {s: pope.score_pope(questions[s], [{"question_id": a["question_id"], "answer": a["answer"]}
                                                 for a in answers[f"pope-{s}"]], split=s)
               for s in questions}
        out["mean"] = pope.mean_over_splits(out)
        return out

    files = {f"coco_pope_{s}.json": qs for s, qs in questions.items()}
    return Benchmark("pope", parts, score, files, settings)


def _amber(opts: SuiteOptions) -> Benchmark:
    from mfpo_train.eval import amber
    from mfpo_train.eval.io import id_field, numbered_records, shown, text_field

    if not opts.amber_root or not opts.amber_images:
        raise MfpoError(f"amber needs AMBER's files: clone {AMBER_SOURCE} and pass --amber-root AMBER/data, and "
                        "download its images (the README's Google Drive link) and pass --amber-images DIR")
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
        return amber.score_amber([{"id": a["id"], "response": a["answer"]} for a in answers["amber"]], data)

    return Benchmark("amber", [Part("amber", items)], score, {}, {"query": opts.amber_query})
