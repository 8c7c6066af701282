"""Time grounding + segmentation (Grounding DINO -> SAM) batched against one image at a time.

Same models, same images, same phrases; the backends are called exactly as the stages call them
(`ground(batch, phrases)` then `segment(batch)`), once with `--batch` images per call and once with
one image per call. Models load (and warm up) before timing. Prints per-image times and the ratio.

    python -m benchmarks.grounding_batch                      # tiny random models, CPU
    python -m benchmarks.grounding_batch --full --device cuda # full-size random-weight configs
                                                              # (grounding-dino-tiny / sam-vit-base shapes)

Full-size configs are for a GPU: on a CPU a Grounding DINO forward takes ~8 s and randomly
initialised SAM is very slow on zero-padded inputs (its random weights give denormal floats there).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")


def save_full_size(root: Path) -> tuple[Path, Path]:
    """Random-weight models with the real architectures' default configs, and their real processors' settings."""
    import torch
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoProcessor,
        SamConfig,
        SamModel,
        SamProcessor,
    )

    from mfpo_data.backends.tiny import make_bert_tokenizer

    try:
        from transformers import GroundingDinoImageProcessorPil as GdIP
        from transformers import SamImageProcessorPil as SamIP
    except ImportError:
        from transformers import GroundingDinoImageProcessor as GdIP
        from transformers import SamImageProcessor as SamIP
    torch.manual_seed(0)
    tok = make_bert_tokenizer()
    gd = GroundingDinoForObjectDetection(GroundingDinoConfig(text_config=BertConfig(vocab_size=len(tok)))).eval()
    gd.save_pretrained(root / "gd")
    GroundingDinoProcessor(image_processor=GdIP(), tokenizer=tok).save_pretrained(root / "gd")
    SamModel(SamConfig()).eval().save_pretrained(root / "sam")
    SamProcessor(image_processor=SamIP()).save_pretrained(root / "sam")
    return root / "gd", root / "sam"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full", action="store_true", help="full-size random-weight configs instead of tiny ones")
    args = ap.parse_args()

    import numpy as np
    import torch

    from mfpo_data.backends.grounding_dino import GroundingDinoGrounder
    from mfpo_data.backends.sam import SamSegmenter
    from mfpo_data.backends.tiny import make_tiny_grounding_dino, make_tiny_sam
    from mfpo_data.schema import Sample

    root = Path(tempfile.mkdtemp())
    if args.full:
        gd_path, sam_path = save_full_size(root)
    else:
        gd_path, sam_path = make_tiny_grounding_dino(root / "gd"), make_tiny_sam(root / "sam")
    grounder = GroundingDinoGrounder(model_id=str(gd_path), box_threshold=0.05, text_threshold=0.05,
                                     max_boxes_per_phrase=2, device=args.device)
    segmenter = SamSegmenter(model_id=str(sam_path), device=args.device)
    rng = np.random.default_rng(0)
    samples = [Sample(f"s{i}", "bench", str(i), "external", "q", "a", "b",
                      image=rng.integers(0, 255, (args.height, args.width, 3), dtype=np.uint8)) for i in range(args.images)]
    phrases = [["cat", "cup"] if i % 2 else ["dog"] for i in range(args.images)]

    def run(batch: int) -> None:
        for start in range(0, len(samples), batch):
            chunk, words = samples[start : start + batch], phrases[start : start + batch]
            for s, objects in zip(chunk, grounder.ground(chunk, words), strict=True):
                s.key_objects = objects
            segmenter.segment(chunk)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def timed(batch: int) -> float:
        t = time.perf_counter()
        run(batch)
        return time.perf_counter() - t

    run(args.batch)  # load + warm up
    run(1)
    # alternate the two modes and keep the best of each, so load from other processes hits both alike
    runs = [(timed(1), timed(args.batch)) for _ in range(args.repeats)]
    single, batched = min(r[0] for r in runs), min(r[1] for r in runs)
    kind = "full-size random-weight configs" if args.full else "tiny random models"
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"grounding_dino + sam, {kind}, {args.images} images {args.width}x{args.height}, {device}")
    print(f"  one image at a time : {single / args.images * 1000:8.1f} ms/image")
    print(f"  batch of {args.batch:<11d}: {batched / args.images * 1000:8.1f} ms/image")
    print(f"  speed-up batched vs one at a time: {single / batched:.2f}x")


if __name__ == "__main__":
    main()
