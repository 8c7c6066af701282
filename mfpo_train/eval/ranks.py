"""`mfpo-eval run` over the processes it is launched with (`accelerate launch`, `torchrun`): one model per process,
the items of every part dealt out between them.

    accelerate launch --num_processes 8 -m mfpo_train.eval.cli run --model ... --out eval/mfpo      # 8 GPUs
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 -m mfpo_train.eval.cli run ... --out eval/x   # CPU, gloo

The main process (rank 0) alone checks the settings and files, claims and locks the output folder, writes
run.json, the merged answers, results.json and results.md, runs the probes and the MMHal judge, and prints;
the others load the model on their device, answer their share and leave. A refusal is the main process's one
line; the others end with it, silently.

Each part (e.g. pope-random) is answered this way:
1. the main process folds any answers a killed multi-process run left in `<part>.answers.rank<r>.jsonl` into
   `<part>.answers.jsonl` (`vlm.order_answers`);
2. every process reads which items `<part>.answers.jsonl` answers already, sorts the others longest prompt
   first (`vlm.by_prompt_length`) and takes every world-th of them from its rank on: the batches of each
   process have prompts of like lengths, and every process gets the same mix;
3. each appends its answers to its own `<part>.answers.rank<r>.jsonl`, flushed batch by batch;
4. the main process merges them into `<part>.answers.jsonl`, in item order.
So a kill of any process loses at most the batches being written, and a rerun (with any number of processes)
resumes; the answers file ends as a one-process run writes it. Greedy answers do not depend on the batch an
item is in, so the results equal a one-process run's.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from mfpo_data.errors import MfpoError


logger = logging.getLogger(__name__)

WAIT = timedelta(hours=12)  # how long a process waits for the others (the main process's probes, a long part)


class RefusedOnMain(MfpoError):
    """The main process refused the run (and said why); the other processes end without a word."""


@dataclass
class Ranks:
    """This process's place among those the run was launched with (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    device: str | None = None  # the process's device when launched with several
    started: bool = False  # past the main process's checks: an error now is this process's own, and is printed

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def share(self, obj):
        """The main process's `obj`, in every process."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched_ranks() -> Ranks:
    """The processes this one was launched with (`WORLD_SIZE` > 1: their group is joined here, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Ranks()
    import torch
    from accelerate import PartialState

    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu, timeout=WAIT)
    if state.num_processes != world:
        raise MfpoError(f"launched with WORLD_SIZE={world}, but {state.num_processes} process(es) joined")
    ranks = Ranks(state.process_index, state.num_processes, str(state.device))
    if not ranks.main:  # the main process speaks for the run
        from transformers.utils import logging as transformers_logging

        logging.getLogger("mfpo_train").setLevel(logging.WARNING)
        logging.getLogger("mfpo_data").setLevel(logging.WARNING)
        transformers_logging.disable_progress_bar()
    return ranks


def shard_file(answers_file: Path, rank: int) -> Path:
    """`pope-random.answers.jsonl` -> `pope-random.answers.rank1.jsonl`: what process `rank` appends to."""
    return answers_file.with_name(answers_file.name.removesuffix(".jsonl") + f".rank{rank}.jsonl")


def shards(answers_file: Path) -> list[Path]:
    """The answers files of single processes that a multi-process run left beside `answers_file`."""
    stem = answers_file.name.removesuffix(".jsonl")
    found = [p for p in answers_file.parent.glob(f"{stem}.rank*.jsonl") if p.name[len(stem) + 5:-6].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(stem) + 5:-6]))


def check_part(items: list[dict], answers_file: Path) -> None:
    """Refuse, in one line and before a model loads, a damaged answers file of the part or of one of its processes."""
    from mfpo_data.backends.vlm import written_answers

    for path in (answers_file, *shards(answers_file)):
        written_answers(items, path)


def generate_part(model, processor, items: list[dict], answers_file: Path, ranks: Ranks, *, batch_size: int,
                  max_new_tokens: int, desc: str, progress: bool, image_cache=None) -> list[dict] | None:
    """Answer the part's `items` into `answers_file`, shared among the processes (module notes). Returns the
    records in item order in the main process (None in the others)."""
    from mfpo_data.backends.vlm import by_prompt_length, generate_answers, order_answers, written_answers

    if ranks.world == 1:
        order_answers(items, answers_file, shards(answers_file))  # what a killed multi-process run left
        return generate_answers(model, processor, items, answers_file, batch_size=batch_size,
                                max_new_tokens=max_new_tokens, desc=desc, progress=progress, image_cache=image_cache)
    if ranks.main:
        order_answers(items, answers_file, shards(answers_file))
    ranks.barrier()
    done = written_answers(items, answers_file)
    todo = by_prompt_length([it for it in items if str(it["key"]) not in done], processor)
    mine = todo[ranks.rank::ranks.world]
    if done and ranks.main:
        logger.info("%s: %d of %d answers already in %s; generating the other %d over %d processes", desc, len(done),
                    len(items), answers_file, len(todo), ranks.world)
    generate_answers(model, processor, mine, shard_file(answers_file, ranks.rank), batch_size=batch_size,
                     max_new_tokens=max_new_tokens, desc=f"{desc} (rank 0 of {ranks.world})",
                     progress=progress and ranks.main, image_cache=image_cache)
    ranks.barrier()
    if not ranks.main:
        return None
    order_answers(items, answers_file, shards(answers_file))
    records = written_answers(items, answers_file)
    return [records[str(it["key"])] for it in items]
