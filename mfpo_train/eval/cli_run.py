"""`mfpo-eval run`: generate with a model (+ adapter, + its base), score, write results.json and the table.

    mfpo-eval run --model llava-hf/llava-1.5-7b-hf --adapter runs/mfpo/final --base llava-hf/llava-1.5-7b-hf \\
        --benchmarks objhal,pope,probes --coco-root /data/coco --probe-data ORG/mfpo-coco --out eval/mfpo
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from mfpo_data.errors import MfpoError


NEEDS = ("torch", "transformers", "peft")  # generation with an adapter; the scorers ask for nltk themselves


def run(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (results.json, results.md, answers).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Hub id or folder of the model (default with --adapter: its base model).")] = None,
    adapter: Annotated[Path | None, typer.Option("--adapter", help="PEFT adapter folder, as mfpo-train writes it (OUT/final).")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Merge the adapter into the weights (faster generation).")] = False,
    base: Annotated[str | None, typer.Option("--base", help="Also evaluate this base model and add the difference row.")] = None,
    benchmarks: Annotated[str, typer.Option("--benchmarks", "-b", help="Comma-separated: objhal, chair-coco, pope, amber, mmhal, probes.")] = "objhal,pope",
    revision: Annotated[str | None, typer.Option("--revision", help="Hub revision of --model.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per generate call.")] = 8,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Longest answer, in tokens.")] = 512,
    dtype: Annotated[str, typer.Option("--dtype", help="auto (checkpoint dtype on GPU, float32 on CPU), float32, bfloat16, float16.")] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto (GPU when present), cpu, cuda, cuda:1, ...")] = "auto",
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Run the model repository's own code.")] = False,
    coco_root: Annotated[Path | None, typer.Option("--coco-root", help="COCO folder (annotations/ and image folders); default: the bundled sample.")] = None,
    coco_split: Annotated[str | None, typer.Option("--coco-split", help="COCO split (default: val2014; 'sample' for the bundled sample).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the drawn item sets and the probes' noise.")] = 0,
    objhal_questions: Annotated[Path | None, typer.Option("--objhal-questions", help="RLAIF-V's obj_halbench_300_with_image.jsonl (default: the shipped 300 ids).")] = None,
    objhal_images: Annotated[int | None, typer.Option("--objhal-images", help="Draw an Object HalBench-style set of N images from the COCO split instead.")] = None,
    objhal_scorer: Annotated[str, typer.Option("--objhal-scorer", help="rlaifv (RLAIF-V's rule path, WordNet lemmas) or chair (the reference CHAIR, pattern singulars).")] = "rlaifv",
    fixed_vocabulary: Annotated[bool, typer.Option("--fixed-vocabulary", help="CHAIR and Object HalBench: count what the reference cannot (dead synonym entries, 'a bus', 'ties'); labelled, not the reference's numbers.")] = False,
    chair_images: Annotated[int, typer.Option("--chair-images", help="Images of the COCO split for chair-coco.")] = 500,
    pope_questions: Annotated[Path | None, typer.Option("--pope-questions", help="Folder with POPE's coco_pope_{random,popular,adversarial}.json (checked against the official sha256).")] = None,
    pope_source: Annotated[str, typer.Option("--pope-source", help="auto (the shipped official files on val2014, else seeded questions), official, or build (seeded, labelled).")] = "auto",
    pope_convention: Annotated[str, typer.Option("--pope-convention", help="pope (evaluate.py), llava (eval_pope.py, mean F1), lmms-eval (exact match), vlmevalkit (yes/no extraction, pooled F1).")] = "pope",
    pope_labels: Annotated[str, typer.Option("--pope-labels", help="pope, or repope (RePOPE's corrected labels; needs --repope-dir).")] = "pope",
    repope_dir: Annotated[Path | None, typer.Option("--repope-dir", help="RePOPE's annotations/ folder (coco_repope_{random,popular,adversarial}.json).")] = None,
    pope_images: Annotated[int, typer.Option("--pope-images", help="Images per POPE split when building questions.")] = 500,
    amber_root: Annotated[Path | None, typer.Option("--amber-root", help="AMBER's data/ folder (annotations.json, relation.json, safe_words.txt, query/).")] = None,
    amber_images: Annotated[Path | None, typer.Option("--amber-images", help="Folder of AMBER's images.")] = None,
    amber_nouns: Annotated[str, typer.Option("--amber-nouns", help="Noun tagger: auto, nltk (the reference's; needs its data), aptagger, rules.")] = "auto",
    amber_similarity: Annotated[str, typer.Option("--amber-similarity", help="auto (spaCy en_core_web_lg when installed, else exact match, labelled), spacy, exact.")] = "auto",
    mmhal_questions: Annotated[Path | None, typer.Option("--mmhal-questions", help="MMHal-Bench's response_template.json.")] = None,
    mmhal_images: Annotated[Path | None, typer.Option("--mmhal-images", help="Folder of MMHal-Bench's images.")] = None,
    judge: Annotated[str | None, typer.Option("--judge", help="MMHal judge: a local causal LM (Hub id or folder), or a model name served at --judge-url.")] = None,
    judge_url: Annotated[str | None, typer.Option("--judge-url", help="OpenAI-compatible endpoint of the judge (e.g. http://localhost:8000/v1).")] = None,
    judge_key_env: Annotated[str, typer.Option("--judge-key-env", help="Environment variable holding the endpoint's API key (never printed).")] = "OPENAI_API_KEY",
    judge_max_new_tokens: Annotated[int, typer.Option("--judge-max-new-tokens", help="Longest judge review, in tokens.")] = 512,
    probe_data: Annotated[str | None, typer.Option("--probe-data", help="mfpo dataset for the probes: a build folder, a published folder or a Hub id.")] = None,
    probe_split: Annotated[str | None, typer.Option("--probe-split", help="Split to probe (default: test when there is one, else train).")] = None,
    probe_max_samples: Annotated[int | None, typer.Option("--probe-max-samples", help="Probe at most this many rows.")] = None,
    probe_batch_size: Annotated[int, typer.Option("--probe-batch-size", help="Rows per probe forward (6 sequences each).")] = 4,
):
    """Evaluate a model (and its base) on the hallucination benchmarks and MFPO's probes.

    Launched with several processes (`accelerate launch`, `torchrun`), the items are shared among them; the
    main process alone writes results and prints.
    """
    from mfpo_data.secrets import redact_logging, scrub

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact_logging()
    ranks = None
    try:
        from mfpo_data._deps import require

        require(*NEEDS, extra="train,eval", feature="mfpo-eval run")  # one line, not an import traceback
        from mfpo_data.backends.vlm import adapter_base_model
        from mfpo_train.eval.api import Decoding, ModelSpec, run_evaluation
        from mfpo_train.eval.ranks import launched_ranks
        from mfpo_train.eval.suite import SuiteOptions

        ranks = launched_ranks()
        opts = SuiteOptions(
            coco_root=str(coco_root) if coco_root else None, coco_split=coco_split, seed=seed,
            objhal_questions=str(objhal_questions) if objhal_questions else None, objhal_images=objhal_images,
            objhal_scorer=objhal_scorer, fixed_vocabulary=fixed_vocabulary,
            chair_images=chair_images, pope_questions=str(pope_questions) if pope_questions else None,
            pope_source=pope_source, pope_convention=pope_convention, pope_labels=pope_labels,
            repope_dir=str(repope_dir) if repope_dir else None,
            pope_images=pope_images, amber_root=str(amber_root) if amber_root else None,
            amber_images=str(amber_images) if amber_images else None, amber_nouns=amber_nouns,
            amber_similarity=amber_similarity, mmhal_questions=str(mmhal_questions) if mmhal_questions else None,
            mmhal_images=str(mmhal_images) if mmhal_images else None, judge=judge, judge_url=judge_url,
            judge_key_env=judge_key_env, judge_max_new_tokens=judge_max_new_tokens,
            probe_data=probe_data, probe_split=probe_split, probe_max_samples=probe_max_samples)
        if model is None and adapter is None:
            raise MfpoError("--model is required (or --adapter, whose base model is then used)")
        model = model or adapter_base_model(adapter)
        if not model:
            raise MfpoError(f"{adapter}/adapter_config.json names no base model; pass --model")
        specs = [ModelSpec("model", model, str(adapter) if adapter else None, merge, revision)]
        if base is not None:
            specs.append(ModelSpec("base", base))
        run_evaluation(specs, benchmarks, out, opts=opts,
                                decoding=Decoding(batch_size=batch_size, max_new_tokens=max_new_tokens,
                                                  probe_batch_size=probe_batch_size),
                                dtype=dtype, device=device, trust_remote_code=trust_remote_code, ranks=ranks)
    except MfpoError as e:
        if ranks is None or ranks.main or ranks.started:  # the main process's refusal is said once, by it
            who = "" if ranks is None or ranks.main else f"rank {ranks.rank}: "
            typer.secho(f"error: {who}{e}", fg=typer.colors.RED, err=True)
        if ranks is not None and ranks.world > 1 and not ranks.started:
            ranks.barrier()  # the line is out before a process ends (the launcher then stops the others)
        raise typer.Exit(1) from None
    if not ranks.main:
        return
    typer.echo((out / "results.md").read_text(encoding="utf-8"), nl=False)
    typer.echo(scrub(f"wrote {out / 'results.json'} and {out / 'results.md'}"))
