"""What re-detecting an image costs: the `detector` grounding backend (RT-DETRv2-R18 shapes) against
Grounding DINO (grounding-dino-tiny shapes), both as random-weight models built from their default
configs with their real processors' image sizes, called through the backends as the stages call them.

CPU time per image (one torch thread, rounds of the two interleaved) is the verdict; wall time beside it.
Random weights cost the same FLOPs as trained ones, except where a model's work depends on its scores.

    python -m benchmarks.detector_cost                  # 640x480 images, 4 per call, 3 rounds
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")


def save_rtdetr(root: Path) -> Path:
    """RT-DETRv2 with ResNet-18-vd at PekingU/rtdetr_v2_r18vd's shapes (transformers' conversion script: basic
    blocks, depths 2-2-2-2, hidden expansion 0.5, 3 decoder layers), COCO's 80 labels, 640x640 input."""
    import torch
    from transformers import RTDetrImageProcessorPil, RTDetrResNetConfig, RTDetrV2Config, RTDetrV2ForObjectDetection

    from mfpo_data.backends.tiny import coco_id2label

    torch.manual_seed(0)
    names = [n for n in coco_id2label().values() if n != "N/A"]
    backbone = RTDetrResNetConfig(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic",
                                  out_features=["stage2", "stage3", "stage4"], out_indices=[2, 3, 4])
    config = RTDetrV2Config(backbone_config=backbone, encoder_in_channels=[128, 256, 512], hidden_expansion=0.5,
                            decoder_layers=3, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    RTDetrV2ForObjectDetection(config).eval().save_pretrained(root / "rtdetr")
    RTDetrImageProcessorPil(size={"height": 640, "width": 640}).save_pretrained(root / "rtdetr")
    return root / "rtdetr"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import numpy as np
    import torch

    from benchmarks.grounding_batch import save_full_size
    from mfpo_data.backends.detector import DetectorGrounder
    from mfpo_data.backends.grounding_dino import GroundingDinoGrounder
    from mfpo_data.schema import Sample

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp())
    gd_path, _ = save_full_size(root)
    backends = {
        "grounding_dino (tiny shapes, 800 px short side)": GroundingDinoGrounder(model_id=str(gd_path), device="cpu", dtype="float32"),
        "detector (RT-DETRv2-R18 shapes, 640x640)": DetectorGrounder(model_id=str(save_rtdetr(root)), device="cpu", dtype="float32"),
    }
    rng = np.random.default_rng(0)
    samples = [Sample(f"s{i}", "t", str(i), "caption", "q", "a", "b",
                      image=rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)) for i in range(args.images)]
    phrases = [["dog", "person"]] * len(samples)
    for backend in backends.values():  # load and warm up outside the timing
        backend.ground(samples[:1], phrases[:1])
    cpu = {name: [] for name in backends}
    wall = {name: [] for name in backends}
    for _ in range(args.rounds):
        for name, backend in backends.items():
            c, w = time.process_time(), time.perf_counter()
            backend.ground(samples, phrases)
            cpu[name].append((time.process_time() - c) / len(samples))
            wall[name].append((time.perf_counter() - w) / len(samples))
    print(f"{args.images} images of {args.width}x{args.height} per call, {args.rounds} interleaved rounds, 1 torch thread, "
          f"torch {torch.__version__}")
    for name in backends:
        print(f"{name}: {min(cpu[name]):.2f} s CPU / image (best round), {min(wall[name]):.2f} s wall")
    gd, det = (min(cpu[n]) for n in backends)
    print(f"ratio grounding_dino / detector: {gd / det:.1f}x CPU time")


if __name__ == "__main__":
    main()
