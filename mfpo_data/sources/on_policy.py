"""`kind: on_policy`: text pairs from the model's own answers, labelled by CHAIR against COCO's annotations.

For each image of a COCO-format folder (read as `kind: coco` reads it: the same index, record checks,
rejects and `exclude`), the model answers each prompt `samples` (K) times, and the pair is chosen
from those K answers by the benchmarks' own scorers (`policy_pairs.py`): CHAIR for free-form prompts
(by default "Please describe this image in detail."), POPE's parser for POPE-style questions
(`presence_questions` per image, about present objects and absent plausible ones). No judge model,
no API: the labels are what `mfpo-eval chair` and `mfpo-eval pope` would say about those answers.

Generation (`backends/vlm.py`, the code `mfpo-eval run` uses): any image-text-to-text model by Hub id
or folder, plus a LoRA adapter (`mfpo-train`'s OUT/final), on this rank's device (`device: auto`:
GPU `rank % n`), in batches of `batch_size` answers through the model's chat template. Answer k of
a prompt is sampled with a random stream seeded from (recipe seed, pair id, k), so the answers, and
the rows, are the same for 1 task or many. Each rank appends its answers, with their labels, to
`staging/RANK.answers.jsonl` as they come; a rerun after a kill reads them back and generates only
what is missing (answers of another model or adapter in that file are refused). Finalize merges them
into `OUT/answers.jsonl`: every sampled answer with its label, the pairs' evidence.

Every row's metadata names the policy (model, revision, adapter and its sha256) and the sampling
settings, and which answers were chosen and rejected with their labels. An image and prompt without
a valid pair is a reject with its reason (`policy_pairs.REASONS`), counted like every other drop.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mfpo_data.errors import ConfigError, MfpoError
from mfpo_data.imaging import DEFAULT_MAX_PIXELS, ImageError, xywh_to_xyxy
from mfpo_data.layout import rank_answers_name
from mfpo_data.schema import Annotation, Sample
from mfpo_data.scorers.pope import PARSERS, question_text
from mfpo_data.scorers.results import SCORER_VERSIONS
from mfpo_data.secrets import public_value
from mfpo_data.seeding import rng, sample_seed
from mfpo_data.sources.coco import CocoSource
from mfpo_data.stages.s7_writer import fault_point
from mfpo_data.textpairs.coco_pairs import presence_pairs
from mfpo_data.textpairs.policy_pairs import (CHOSEN_RULES, Choice, chair_label, choose_description_pair,
                                              choose_presence_pair, hallucinated_objects, presence_label,
                                              recall)  # fmt: skip


logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "Please describe this image in detail."
EXTRA = "onpolicy"


@dataclass
class _Unit:
    """One image and prompt: its K answers and, once they are all there, its pair or its reject."""

    id: str
    pair_type: str  # "description" | "presence"
    question: str
    keys: list[str]
    seeds: list[int]
    object: str | None = None  # presence: the object asked about
    truth: str | None = None  # presence: "yes" | "no"
    nearest: str | None = None  # presence "no": the present object the absent one was drawn from


@dataclass
class _Image:
    """One index line on its way through the rank: its units, decoded image and what it yields first."""

    item: int
    rec: dict
    units: list[_Unit] = field(default_factory=list)
    ready: list[Sample] = field(default_factory=list)  # rejects of the record, yielded before its pairs
    image: object = None  # RGB uint8 array
    embedded: bytes | None = None


class OnPolicySource(CocoSource):
    """COCO images, the model's own answers, pairs labelled by CHAIR (or POPE's parser)."""

    kind = "on_policy"

    def __init__(
        self,
        model: str | None = None,
        adapter: str | None = None,
        revision: str | None = None,
        root: str | None = None,
        split: str = "sample",
        images_dir: str | None = None,
        instances_file: str | None = None,
        captions_file: str | None = None,
        prompts: list[str] | None = None,
        presence_questions: int = 0,
        presence_suffix: str = "",
        presence_parser: Literal["pope", "exact", "yorn"] = "pope",
        samples: int = 8,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        max_new_tokens: int = 512,
        batch_size: int = 8,
        min_recall: float = 0.0,
        chosen: Literal["fewest", "clean"] = "fewest",
        key_object: Literal["chosen", "hallucinated"] = "chosen",
        chair_synonyms: Literal["coco", "refine"] = "coco",
        chair_protocol: Literal["reference", "fixed"] = "reference",
        device: str = "auto",
        dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
        limit: int | None = None,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        seed: int = 0,
        index_path: str | None = None,
        exclude: str = "eval",
    ):
        super().__init__(root, split, images_dir, instances_file, captions_file, pair_types=["presence"],
                         presence_per_image=presence_questions, absent_key="nearest", limit=limit,
                         max_image_pixels=max_image_pixels, seed=seed, index_path=index_path, exclude=exclude)
        from mfpo_data.backends.vlm import GenerationError, Sampling

        self.model, self.adapter, self.revision = model, adapter, revision
        self.prompts = list(prompts) if prompts is not None else [DEFAULT_PROMPT]
        self.presence_questions, self.presence_suffix, self.presence_parser = presence_questions, presence_suffix, presence_parser
        self.samples, self.max_new_tokens, self.batch_size = samples, max_new_tokens, batch_size
        self.min_recall, self.chosen, self.key_object = min_recall, chosen, key_object
        self.chair_synonyms, self.chair_protocol = chair_synonyms, chair_protocol
        self.device, self.dtype, self.trust_remote_code = device, dtype, trust_remote_code
        self.attn_implementation = attn_implementation
        for name, value, low in (("samples", samples, 1), ("max_new_tokens", max_new_tokens, 1),
                                 ("batch_size", batch_size, 1), ("presence_questions", presence_questions, 0)):
            if value < low:
                raise ConfigError(f"'source.{name}' must be >= {low}, got {value}")
        if not 0.0 <= min_recall <= 1.0:
            raise ConfigError(f"'source.min_recall' must be in [0, 1] (a share of the image's objects), got {min_recall}")
        if not self.prompts and not presence_questions:
            raise ConfigError("'source.prompts' is empty and 'source.presence_questions' is 0: nothing to ask")
        if any(not isinstance(p, str) or not p.strip() for p in self.prompts):
            raise ConfigError("'source.prompts' must be non-empty strings")
        if chosen not in CHOSEN_RULES:
            raise ConfigError(f"'source.chosen' must be one of {', '.join(CHOSEN_RULES)}, got {chosen!r}")
        if presence_parser not in PARSERS:
            raise ConfigError(f"'source.presence_parser' must be one of {', '.join(PARSERS)}, got {presence_parser!r}")
        if chair_protocol == "fixed" and chair_synonyms != "coco":
            raise ConfigError("'source.chair_protocol: fixed' goes with 'source.chair_synonyms: coco'")
        try:
            self.sampling = Sampling(temperature, top_p, top_k)
        except GenerationError as e:
            raise ConfigError(f"'source': {e}") from None
        self.policy: dict = {}  # what identifies the weights and the sampling, set by check()
        self._vocab = None

    # -- run once, before the ranks -------------------------------------------------------------
    def check(self) -> None:
        """Also: the on-policy extra imports, the model is in reach (no load), and the CHAIR captions are there."""
        super().check()
        from mfpo_data._deps import hub_offline, missing_model_message, model_in_reach, require
        from mfpo_data.errors import MissingModelError

        require("torch", "transformers", "nltk", "inflect", *(["peft"] if self.adapter else []), extra=EXTRA,
                feature="source kind 'on_policy' (sampling the model, CHAIR labels)")
        if not self.captions_file.is_file():
            raise MfpoError(f"source: captions file not found: {self.captions_file} (CHAIR's ground truth is the "
                            "instance categories plus the objects the human captions name)")
        from mfpo_data.backends.vlm import adapter_base_model, describe_model

        model = self.model
        if self.adapter is not None:
            model = model or adapter_base_model(self.adapter, "source.adapter")
        if not model:
            raise ConfigError("'source.model' is required (a Hub id or a local folder), or 'source.adapter' whose "
                              "adapter_config.json names its base model")
        if not model_in_reach(model, self.revision):
            if hub_offline():
                raise MissingModelError(missing_model_message(model, "source.model"))
            logger.info("source.model: %s is not a local folder or in the Hugging Face cache; the build will "
                        "download it", model)
        self.model = model
        described = describe_model(model, self.adapter, self.revision)
        self.policy = {**described, "id": hashlib.sha256(json.dumps(
            [described, self.sampling.to_dict(), self.max_new_tokens], sort_keys=True).encode()).hexdigest()[:16]}

    def vocab(self):
        if self._vocab is None:
            from mfpo_data.scorers.chair import load_vocabulary

            self._vocab = load_vocabulary(self.chair_synonyms, self.chair_protocol)
        return self._vocab

    def index_entries(self) -> list[dict]:
        """`kind: coco`'s index lines, each image with its CHAIR ground truth (`scorers.coco.chair_ground_truth`:
        instance categories plus the objects its captions name, as `mfpo-eval chair` computes it) and the
        policy's id, so that a rerun with another adapter in the same folder is seen as other inputs."""
        from mfpo_data.scorers.coco import chair_ground_truth, read_coco

        entries = super().index_entries()
        try:
            coco = read_coco(self.root, self.split, instances_file=self.instances_file, captions_file=self.captions_file)
        except (KeyError, TypeError, AttributeError) as e:
            raise MfpoError(f"source: cannot read CHAIR's ground truth from {self.instances_file}: "
                            f"{type(e).__name__}: {e}") from None
        vocab = self.vocab()
        for entry in entries:
            if "reject" in entry:
                continue
            entry["policy"] = self.policy["id"]
            try:
                entry["chair_truth"] = sorted(chair_ground_truth(coco, vocab, [entry["id"]])[entry["id"]])
            except MfpoError as e:  # a category the CHAIR synonym list does not know
                entry["chair_truth_error"] = str(e)
        self.index_stats["policy"] = {k: v for k, v in self.policy.items() if k != "id"}
        self.index_stats["sampling"] = {"samples": self.samples, **self.sampling.to_dict(),
                                        "max_new_tokens": self.max_new_tokens}
        return entries

    def prepare(self, index_path: Path) -> int:
        """Write the index; refuse a folder whose ranks hold answers of another policy (model, adapter, sampling)."""
        n = super().prepare(index_path)
        for path in sorted(Path(index_path).parent.glob("*.answers.jsonl")):
            with open(path, encoding="utf-8", errors="replace") as f:
                first = f.readline()
            try:
                self._check_policy({"first": json.loads(first)} if first.strip() else {}, path)
            except (json.JSONDecodeError, AttributeError):
                pass  # a torn or damaged line: the rank that owns the file says which
        return n

    # -- per rank ---------------------------------------------------------------------------------
    def run(self, data=None, rank: int = 0, world_size: int = 1) -> Iterator[Sample]:
        from mfpo_data.backends.vlm import AnswersFile

        if self.index_path is None:
            raise RuntimeError(f"{type(self).__name__}.prepare() must run before the ranks start")
        path = Path(self.index_path).with_name(rank_answers_name(rank))
        self._rank, self._fault = rank, fault_point(rank)  # the fault: crash-resume tests only; inert otherwise
        with AnswersFile(path) as sink:
            self._check_policy(sink.done, path)
            resumed = len(sink.done)
            if resumed:
                logger.info("rank %d: %d answers already in %s; sampling the rest", rank, resumed, path)
            pending: deque[_Image] = deque()
            queue: list[tuple[_Image, int, int]] = []  # (image, unit index, sample index) to generate
            with open(self.index_path, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if self.rank_of(i, line, world_size) != rank:
                        continue
                    work = self._start(i, json.loads(line))
                    pending.append(work)
                    queue += [(work, u, k) for u, unit in enumerate(work.units) for k, key in enumerate(unit.keys)
                              if key not in sink.done]
                    while len(queue) >= self.batch_size:
                        self._generate(queue[: self.batch_size], sink)
                        del queue[: self.batch_size]
                    yield from self._finished(pending, sink.done)
            while queue:
                self._generate(queue[: self.batch_size], sink)
                del queue[: self.batch_size]
            yield from self._finished(pending, sink.done)
            self.stat_update("answers/resumed", value=resumed)
            logger.info("rank %d: %d answers sampled, %d resumed", rank, len(sink.done) - resumed, resumed)

    def _check_policy(self, done: dict, path: Path) -> None:
        """Refuse answers that another model, adapter or sampling wrote (their policy id differs)."""
        other = next((r for r in done.values() if r.get("policy") != self.policy["id"]), None)
        if other is not None:
            raise MfpoError(f"{path} holds answers of another model, adapter or sampling (policy {other.get('policy')}, "
                            f"now {self.policy['id']}); rerun with --restart to sample again")

    def _start(self, item: int, rec: dict) -> _Image:
        """The units of an index line (or its rejects) and its decoded image."""
        from mfpo_data.sources.base import read_image

        work = _Image(item, rec)
        if "reject" in rec:
            work.ready.append(self.reject(rec["id"], rec["reject"]))
            return work
        image_id = str(rec["id"])
        work.ready += [self.reject(r["id"], r["reason"], image_id=image_id) for r in rec["rejects"]]
        if "chair_truth_error" in rec:
            work.ready.append(self.reject(f"{self.split}:image:{image_id}", f"no_chair_truth: {rec['chair_truth_error']}",
                                          image_id=image_id))  # fmt: skip
            return work
        work.units = self._units(image_id, rec)
        if not work.units:  # presence questions only, and no annotated object to ask about
            work.ready.append(self.reject(f"{self.split}:image:{image_id}", "no_pairs: no usable annotation",
                                          image_id=image_id))
            return work
        if not rec["chair_truth"]:  # nothing to score a description against: no answers are sampled for it
            described = [u for u in work.units if u.pair_type == "description"]
            work.ready += [self.reject(u.id, Choice(reason="no_ground_truth").message, image_id=image_id) for u in described]
            work.units = [u for u in work.units if u.pair_type != "description"]
        try:
            work.image, work.embedded = read_image(rec["file_name"], self.images_dir, self.max_image_pixels)
        except ImageError as e:  # each of the image's pairs is dropped with the reason; nothing is sampled
            for unit in work.units:
                sample = self._sample(unit, rec, "", "")
                self.drop(sample, str(e))
                work.ready.append(sample)
            work.units = []
        return work

    def _units(self, image_id: str, rec: dict) -> list[_Unit]:
        base = f"{self.split}:{image_id}"
        units = [(f"{base}:describe:{p}", "description", prompt, None, None, None) for p, prompt in enumerate(self.prompts)]
        if self.presence_questions:
            present = sorted({a["category"] for a in rec["annotations"]} | set(rec.get("crowd", ())))
            if present:
                for pair in presence_pairs(present, rng(self.seed, base, "pairs"), self.presence_questions):
                    obj, truth = pair.metadata["object"], pair.metadata["answer"]
                    units.append((f"{base}:{pair.key}", "presence", question_text(obj) + self.presence_suffix, obj,
                                  truth, pair.metadata.get("nearest_present")))
        out = []
        for uid, kind, question, obj, truth, nearest in units:
            keys = [f"{uid}#{k}" for k in range(self.samples)]
            seeds = [sample_seed(self.seed, uid, f"answer/{k}") for k in range(self.samples)]
            out.append(_Unit(uid, kind, question, keys, seeds, obj, truth, nearest))
        return out

    def _loaded(self):
        from mfpo_data.backends.loading import device_for_rank, load_once, log_loaded, resolve_dtype
        from mfpo_data.backends.vlm import load_vlm

        device = device_for_rank(self.device, self._rank)
        dtype = str(resolve_dtype(self.dtype, device, half="bfloat16")).removeprefix("torch.")

        def load():
            loaded = load_vlm(self.model, self.adapter, dtype=dtype, device=device, revision=self.revision,
                              trust_remote_code=self.trust_remote_code, attn_implementation=self.attn_implementation,
                              model_key="source.model", adapter_key="source.adapter")
            log_loaded("source.model", self.model + (f" + {self.adapter}" if self.adapter else ""), device, dtype)
            return loaded

        return load_once(("on_policy", self.model, self.adapter, self.revision, device, dtype), load)

    def _generate(self, batch: list[tuple[_Image, int, int]], sink) -> None:
        """Sample one batch of answers, label each, append them to the rank's answers file."""
        from PIL import Image

        from mfpo_data.backends.vlm import answer_batch, answer_record

        model, processor = self._loaded()
        images: dict[int, object] = {}
        items = []
        for work, u, k in batch:
            unit = work.units[u]
            if id(work) not in images:
                images[id(work)] = Image.fromarray(work.image)
            items.append({"key": unit.keys[k], "image": images[id(work)], "prompt": unit.question, "seed": unit.seeds[k],
                          "image_id": str(work.rec["id"]), "pair": unit.id, "sample": k})
        with self.track_time("generate"):
            answers = answer_batch(model, processor, items, self.max_new_tokens, self.sampling)
        records = []
        for (work, u, _), item, answer in zip(batch, items, answers, strict=True):
            record = answer_record(item, answer)
            record["policy"] = self.policy["id"]
            record["label"] = self._label(work.units[u], work.rec, answer)
            records.append(record)
        sink.write(records)
        self.stat_update("answers/sampled", value=len(records))
        self._fault.reached("answers", len(sink.done))

    def _label(self, unit: _Unit, rec: dict, answer: str) -> dict:
        if unit.pair_type == "presence":
            return presence_label(answer, unit.truth, self.presence_parser)
        return chair_label(answer, str(rec["id"]), rec["chair_truth"], self.vocab())

    def _finished(self, pending: deque[_Image], done: dict) -> Iterator[Sample]:
        """The samples of the images at the front of the queue whose answers are all there, in index order."""
        while pending and all(key in done for unit in pending[0].units for key in unit.keys):
            work = pending.popleft()
            for sample in [*work.ready, *(self._pair(work, unit, done) for unit in work.units)]:
                sample.source_item = work.item
                yield sample

    def _pair(self, work: _Image, unit: _Unit, done: dict) -> Sample:
        """The unit's pair from its answers, or its reject."""
        records = [done[key] for key in unit.keys]
        labels = [r["label"] for r in records]
        if unit.pair_type == "presence":
            choice = choose_presence_pair(labels)
        else:
            choice = choose_description_pair(labels, self.min_recall, self.chosen)
        if choice.reason:
            return self.reject(unit.id, choice.message, image_id=str(work.rec["id"]))
        chosen, rejected = records[choice.chosen], records[choice.rejected]
        sample = self._sample(unit, work.rec, chosen["answer"], rejected["answer"])
        sample.metadata.update(self._evidence(unit, choice, records))
        self._key_object(sample, unit, work.rec, chosen["label"], rejected["label"])
        sample.image, sample.image_bytes = work.image, work.embedded
        self.stat_update(f"pairs/{unit.pair_type}")
        return sample

    def _sample(self, unit: _Unit, rec: dict, chosen: str, rejected: str) -> Sample:
        annotations = [Annotation(a["category"], xywh_to_xyxy(a["bbox"]), a["segmentation"]) for a in rec["annotations"]]
        return Sample(id=unit.id, source=self.kind, image_id=str(rec["id"]), pair_type=unit.pair_type,
                      question=unit.question, chosen=chosen, rejected=rejected, annotations=annotations,
                      metadata={"file_name": rec["file_name"], "policy": public_value({k: v for k, v in self.policy.items() if k != "id"}),
                                "sampling": {"samples": self.samples, **self.sampling.to_dict(),
                                             "max_new_tokens": self.max_new_tokens, "seed": self.seed}})  # fmt: skip

    def _evidence(self, unit: _Unit, choice: Choice, records: list[dict]) -> dict:
        """What the labels said about the two answers, and which scorer said it."""
        chosen, rejected = records[choice.chosen], records[choice.rejected]
        out = {"chosen_sample": choice.chosen, "rejected_sample": choice.rejected}
        if unit.pair_type == "presence":
            out.update(labeler={"scorer": "pope", "version": SCORER_VERSIONS["pope"], "parser": self.presence_parser},
                       object=unit.object, answer=unit.truth, chosen_parsed=chosen["label"]["parsed"],
                       rejected_parsed=rejected["label"]["parsed"],
                       hallucinated=[unit.object] if unit.truth == "no" else [])
            if unit.nearest:
                out["nearest_present"] = unit.nearest
            return out
        out.update(labeler={"scorer": "chair", "version": SCORER_VERSIONS["chair"], **self.vocab().settings},
                   hallucinated=hallucinated_objects(rejected["label"]),
                   chosen_hallucinated=hallucinated_objects(chosen["label"]),
                   chosen_recall=round(recall(chosen["label"]), 4), rejected_recall=round(recall(rejected["label"]), 4),
                   key_object=self.key_object)
        return out

    def _key_object(self, sample: Sample, unit: _Unit, rec: dict, chosen: dict, rejected: dict) -> None:
        """The pair's key object (module notes of `policy_pairs.py` and DATASHEET.md's validity rule)."""
        if unit.pair_type == "presence":
            if unit.truth == "yes":
                sample.target = unit.object
            else:  # "No, there is no X": the claim rests on no region of m
                sample.target, sample.absent_object = unit.nearest, unit.object
            return
        if self.key_object == "hallucinated":
            annotated = {a["category"] for a in rec["annotations"]}
            sample.absent_object = hallucinated_objects(rejected)[0]
            sample.target = next((c for c in chosen["mentioned"] if c in annotated), None)
