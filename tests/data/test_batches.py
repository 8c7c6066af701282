"""Micro-batches that survive their backend: a sample the backend fails on is dropped with its reason and
the rest of its batch goes on, as if each had run alone; out of memory halves the batch; a backend
that never works stops the rank with one line."""

import json
import logging
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from mfpo_data.backends import REGISTRY
from mfpo_data.backends.base import PerturbDrop, Perturbed
from mfpo_data.pipeline.build import build_dataset
from mfpo_data.schema import KeyObject, Sample
from mfpo_data.stages import base
from mfpo_data.stages.base import BackendFailure
from mfpo_data.stages.recovery import error_reason, free_memory, is_out_of_memory
from mfpo_data.stages.s2_grounding import GroundingStage
from mfpo_data.stages.s3_segmentation import SegmentationStage
from mfpo_data.stages.s5_perturbation import PerturbationStage
from mfpo_data.stages.s6_scoring import ScoringStage
from tests.fixtures.coco_folder import make_coco_folder


def _sample(i: int, shape=(24, 32)) -> Sample:
    rng = np.random.default_rng(i)
    s = Sample(f"s{i}", "test", str(i), "caption", "what is here?", "a cat.", "a dog.",
               image=rng.integers(0, 255, (*shape, 3), dtype=np.uint8))
    s.mask = np.zeros(shape, bool)
    s.mask[4:12, 6 + i % 5 : 20] = True
    s.key_objects = [KeyObject("cat", (6.0, 4.0, 20.0, 12.0), 0.9, category="cat")]
    return s


def _state(s: Sample) -> dict:
    """Everything a stage may write, comparable with ==."""
    arr = lambda a: None if a is None else (a.shape, a.tobytes())  # noqa: E731
    return {
        "key_objects": [(k.phrase, k.box_xyxy, k.score, k.category, arr(k.mask)) for k in s.key_objects],
        "mask": arr(s.mask), "rejected_image": arr(s.rejected_image), "image": arr(s.image),
        "perturbation": s.perturbation, "perturbation_params": s.perturbation_params,
        "image_pair_invalid": s.image_pair_invalid, "removal_score": s.removal_score, "difficulty": s.difficulty,
        "metadata": s.metadata, "dropped": s.dropped,
    }  # fmt: skip


def _alone(make_stage, samples) -> list[dict]:
    return [_state(next(iter(make_stage(batch_size=1).run([s])))) for s in samples]


class Calls:
    """Records the ids of every backend call."""

    def __init__(self):
        self.batches: list[list[str]] = []

    def __call__(self, samples):
        self.batches.append([s.id for s in samples])

    def of(self, sample_id: str) -> int:
        return sum(sample_id in b for b in self.batches)


class Scorer:
    """A difficulty from the pixels; raises `error()` for a batch that `fails(ids)`."""

    backend = "fake_scorer"

    def __init__(self, fails=lambda ids: False, error=lambda: RuntimeError("boom")):
        self.fails, self.error, self.calls = fails, error, Calls()

    def score(self, samples):
        self.calls(samples)
        if self.fails([s.id for s in samples]):
            raise self.error()
        return [float(s.image.mean()) for s in samples]


# -- one failing sample in a batch ----------------------------------------------------------------------------
def test_a_backend_error_drops_only_its_sample_and_the_others_equal_running_alone(caplog):
    scorer = Scorer(fails=lambda ids: "s2" in ids, error=lambda: RuntimeError("bad pixel in s2\nand more"))
    stage = ScoringStage(scorer, batch_size=5)
    with caplog.at_level(logging.DEBUG, logger="mfpo_data.stages.base"):
        out = list(stage.run([_sample(i) for i in range(5)]))
    assert [s.id for s in out] == ["s0", "s1", "s2", "s3", "s4"]  # order kept
    assert out[2].dropped == ("scoring", "backend_error: RuntimeError: bad pixel in s2")
    assert [s.dropped for s in out[:2] + out[3:]] == [None] * 4
    alone = _alone(lambda batch_size: ScoringStage(Scorer(), batch_size), [_sample(i) for i in range(5)])
    assert [_state(s) for i, s in enumerate(out) if i != 2] == [a for i, a in enumerate(alone) if i != 2]
    assert scorer.calls.batches == [["s0", "s1", "s2", "s3", "s4"], ["s0"], ["s1"], ["s2"], ["s3"], ["s4"]]
    assert stage.stats["backend_errors"].total == 1 and stage.stats["dropped"].total == 1 and stage.stats["out"].total == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "s2" in warnings[0].getMessage() and "Traceback" in warnings[0].getMessage()


def test_later_failures_are_one_debug_line_each(caplog):
    scorer = Scorer(fails=lambda ids: any(i in ids for i in ("s1", "s3", "s4")))
    with caplog.at_level(logging.DEBUG, logger="mfpo_data.stages.base"):
        out = list(ScoringStage(scorer, batch_size=3).run([_sample(i) for i in range(6)]))
    assert [s.id for s in out if s.dropped] == ["s1", "s3", "s4"]
    dropped_logs = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert [r.levelno for r in dropped_logs] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert all("\n" not in r.getMessage() for r in dropped_logs[1:])


def test_sample_error_keeps_its_own_reason():
    class Grounder:
        def ground(self, samples, phrases):
            return [[KeyObject("cat", (40.0, 0.0, 60.0, 10.0) if s.id == "s1" else (1.0, 1.0, 9.0, 9.0), 0.8)] for s in samples]

    stage = GroundingStage(Grounder(), batch_size=3)
    out = list(stage.run([_sample(i) for i in range(3)]))
    assert out[1].dropped[0] == "grounding" and out[1].dropped[1].startswith("box_outside_image: ")
    assert [len(s.key_objects) for s in (out[0], out[2])] == [1, 1]
    assert stage.stats["objects"].total == 2  # counted once per kept sample: the failed batch counted nothing
    assert stage.stats["backend_errors"].total == 0  # the data's fault, not the backend's


def test_keyboard_interrupt_is_not_caught():
    scorer = Scorer(fails=lambda ids: True, error=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        list(ScoringStage(scorer, batch_size=2).run([_sample(0), _sample(1)]))
    assert scorer.calls.batches == [["s0", "s1"]]


# -- retries start from the sample as it was ---------------------------------------------------------------
class Perturber:
    """Paints the mask grown by 2 (and returns it, as a removal does); refuses `refuse`, returns a wrong
    shape for `wrong_shape`, and raises in `insert` when a batch holds `insert_fails`."""

    def __init__(self, refuse=(), wrong_shape=(), insert_fails=()):
        self.refuse, self.wrong_shape, self.insert_fails = set(refuse), set(wrong_shape), set(insert_fails)

    def perturb(self, samples, seeds):
        out = []
        for s, seed in zip(samples, seeds, strict=True):
            if s.id in self.refuse:
                out.append(PerturbDrop("black_output: refused"))
                continue
            grown = np.zeros_like(s.mask)
            rows, cols = np.nonzero(s.mask)
            grown[max(0, rows.min() - 2) : rows.max() + 3, max(0, cols.min() - 2) : cols.max() + 3] = True
            image = s.image[:-1] if s.id in self.wrong_shape else 255 - s.image
            out.append(Perturbed(image, {"seed": seed}, mask=grown))
        return out

    def insert(self, samples, seeds, prompts):
        if any(s.id in self.insert_fails for s in samples):
            raise ValueError("the pipeline refused the prompt")
        return [Perturbed(255 - s.image, {"prompt": p}) for s, p in zip(samples, prompts, strict=True)]


def test_perturbation_retries_do_not_see_the_failed_attempt():
    """The first attempt grows masks, drops a sample and places insertions before a later sample fails:
    none of it may leak into the retries (a mask grown twice, an insertion anchored on its own box)."""
    ids = {"refuse": ["s1"], "wrong_shape": ["s3"], "insert_fails": ["s5"]}

    def make(batch_size, **kw):
        return PerturbationStage(Perturber(**kw), kind="fake", seed=1, batch_size=batch_size, presence_negative="insert")

    def samples():
        out = [_sample(i) for i in range(7)]
        for s in out[4:]:
            s.absent_object = "dog"
        return out

    batched = [_state(s) for s in make(7, **ids).run(samples())]
    alone = _alone(lambda batch_size: make(batch_size, **ids), samples())
    assert batched == alone
    dropped = {s["dropped"][1].split(":")[0] for s in batched if s["dropped"]}
    assert dropped == {"black_output", "perturbation_shape", "backend_error"}
    assert batched[5]["dropped"] == ("perturbation", "backend_error: ValueError: the pipeline refused the prompt")
    assert batched[4]["perturbation_params"]["region"] == "inserted" and batched[6]["perturbation_params"]["region"] == "inserted"


def test_segmentation_retry_equals_alone():
    class Segmenter:
        def segment(self, samples):
            return [[np.ones((5, 5), bool) if s.id == "s2" else s.image[..., 0] > 128 for _ in s.key_objects] for s in samples]

    def make(batch_size):
        return SegmentationStage(Segmenter(), batch_size=batch_size)

    def samples():
        out = [_sample(i) for i in range(4)]
        out[1].key_objects = []
        return out

    batched = [_state(s) for s in make(4).run(samples())]
    assert batched == _alone(make, samples())
    assert batched[2]["dropped"][1].startswith("mask_size_mismatch")
    assert batched[0]["key_objects"][0][4] is not None and batched[1]["mask"] is None


# -- out of memory -----------------------------------------------------------------------------------------
def _cuda_oom():
    torch = pytest.importorskip("torch")
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")


def test_out_of_memory_halves_the_batch_for_the_rest_of_the_rank(caplog):
    _cuda_oom()
    scorer = Scorer(fails=lambda ids: len(ids) > 2, error=_cuda_oom)
    stage = ScoringStage(scorer, batch_size=8)
    with caplog.at_level(logging.WARNING, logger="mfpo_data.stages.base"):
        out = list(stage.run([_sample(i) for i in range(20)]))
    assert [s.id for s in out] == [f"s{i}" for i in range(20)] and not any(s.dropped for s in out)
    assert [len(b) for b in scorer.calls.batches] == [8, 4] + [2] * 10  # 8 -> 4 -> 2; the second 4 goes as 2 + 2 at once
    assert stage.batch_size == 2 and stage.stats["oom_retries"].total == 2
    assert [r.getMessage() for r in caplog.records] == [
        "scoring: out of memory at batch 8; batch_size is 4 from now on",
        "scoring: out of memory at batch 4; batch_size is 2 from now on",
    ]
    assert [_state(s) for s in out] == _alone(lambda batch_size: ScoringStage(Scorer(), batch_size), [_sample(i) for i in range(20)])


def test_a_sample_out_of_memory_alone_is_retried_once_then_dropped():
    _cuda_oom()
    scorer = Scorer(fails=lambda ids: "s1" in ids, error=_cuda_oom)
    stage = ScoringStage(scorer, batch_size=4)
    out = list(stage.run([_sample(i) for i in range(4)]))
    assert out[1].dropped == ("scoring", "out_of_memory: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert [s.dropped for s in (out[0], out[2], out[3])] == [None] * 3
    assert scorer.calls.batches == [["s0", "s1", "s2", "s3"], ["s0", "s1"], ["s0"], ["s1"], ["s1"], ["s2"], ["s3"]]
    assert stage.stats["oom_retries"].total == 3 and stage.batch_size == 1


def test_out_of_memory_is_told_from_other_errors_without_torch():
    class OutOfMemoryError(RuntimeError):  # torch's class, by name
        pass

    assert is_out_of_memory(OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only RuntimeErrors say it in their message
    assert not is_out_of_memory(MemoryError())
    assert error_reason("backend_error", KeyError("x")) == "backend_error: KeyError: 'x'"
    assert error_reason("backend_error", RuntimeError()) == "backend_error: RuntimeError"


def test_free_memory_empties_the_cuda_cache_only_when_cuda_is_in_use(monkeypatch):
    emptied = []

    def fake_torch(initialized):
        cuda = SimpleNamespace(is_available=lambda: True, is_initialized=lambda: initialized,
                               empty_cache=lambda: emptied.append("cuda"))  # fmt: skip
        return SimpleNamespace(cuda=cuda, backends=SimpleNamespace(mps=SimpleNamespace(is_available=lambda: False)),
                               mps=SimpleNamespace(empty_cache=lambda: emptied.append("mps")))  # fmt: skip

    monkeypatch.setitem(sys.modules, "torch", fake_torch(initialized=False))
    free_memory()
    assert emptied == []
    monkeypatch.setitem(sys.modules, "torch", fake_torch(initialized=True))
    free_memory()
    assert emptied == ["cuda"]
    monkeypatch.delitem(sys.modules, "torch")
    free_memory()  # no torch loaded: nothing to empty, nothing imported
    assert "torch" not in sys.modules


# -- a backend that never works ----------------------------------------------------------------------------
def test_a_backend_that_never_works_stops_the_rank_with_one_line(monkeypatch):
    monkeypatch.setattr(base, "GIVE_UP_AFTER", 5)
    scorer = Scorer(fails=lambda ids: True, error=lambda: OSError("libcudnn.so.9: cannot open shared object file"))
    with pytest.raises(BackendFailure) as e:
        list(ScoringStage(scorer, batch_size=2).run([_sample(i) for i in range(10)]))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("scoring: backend 'fake_scorer' failed on 5 samples")
    assert msg.endswith("first error: backend_error: OSError: libcudnn.so.9: cannot open shared object file")
    assert ["s5"] not in scorer.calls.batches and scorer.calls.of("s6") == 0  # it stopped at s4, the fifth alone


def test_a_cuda_error_that_breaks_the_device_stops_the_rank_at_once():
    """After a device-side assert every CUDA call of the process fails: retrying would drop the whole rank."""
    scorer = Scorer(fails=lambda ids: "s3" in ids,
                    error=lambda: RuntimeError("CUDA error: device-side assert triggered\nCompile with TORCH_USE_CUDA_DSA"))  # fmt: skip
    with pytest.raises(BackendFailure) as e:
        list(ScoringStage(scorer, batch_size=2).run([_sample(i) for i in range(6)]))
    assert str(e.value) == ("scoring: backend 'fake_scorer' on s2, s3: backend_error: RuntimeError: CUDA error: device-side "
                            "assert triggered (the GPU cannot be used in this process after this error; the rank stops)")  # fmt: skip
    assert scorer.calls.batches == [["s0", "s1"], ["s2", "s3"]]  # no retry one by one
    # a CUDA error that does not break the context (a bad launch for one input) is one sample's failure
    scorer = Scorer(fails=lambda ids: "s3" in ids, error=lambda: RuntimeError("CUDA error: invalid configuration argument"))
    out = list(ScoringStage(scorer, batch_size=2).run([_sample(i) for i in range(6)]))
    assert [s.id for s in out if s.dropped] == ["s3"]


def test_bad_samples_after_a_success_are_dropped_not_fatal(monkeypatch):
    monkeypatch.setattr(base, "GIVE_UP_AFTER", 3)
    scorer = Scorer(fails=lambda ids: ids != ["s0"])
    out = list(ScoringStage(scorer, batch_size=1).run([_sample(i) for i in range(8)]))
    assert out[0].dropped is None and all(s.dropped[1].startswith("backend_error") for s in out[1:])


# -- in a real build -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_coco_folder(tmp_path_factory.mktemp("coco"), n_images=4)


def _flaky_build(coco, out, **options):
    overrides = [f"source.root={coco}", "source.split=val2017", "output.progress=false", "executor.tasks=1",
                 "executor.workers=1", "scoring.backend=flaky", "scoring.batch_size=5"]  # fmt: skip
    return build_dataset("coco", overrides + [f"scoring.{k}={v}" for k, v in options.items()], out)


def test_a_build_records_the_failed_samples_and_keeps_the_others(coco, tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY["scoring"], "flaky", "tests.fixtures.flaky_backend:FlakyDifficulty")
    log = tmp_path / "calls.txt"
    layout = _flaky_build(coco, tmp_path / "out", fail_image='"2"', log_file=str(log))
    rejects = [json.loads(line) for line in layout.rejects_file.read_text().splitlines()]
    failed = [r for r in rejects if r["stage"] == "scoring"]
    assert failed and all(r["reason"] == f"backend_error: RuntimeError: index out of range in the model for {r['id']}"
                          for r in failed)  # fmt: skip
    calls = [line.split() for line in log.read_text().splitlines()]
    alone = {b[0] for b in calls if len(b) == 1}
    assert {r["id"] for r in failed} <= alone  # each failed sample failed alone before it was dropped
    stats = layout.read_stats()
    assert stats["dropped"]["backend_error"] == len(failed) and stats["dropped_by_stage"]["scoring"] == len(failed)

    clean = _flaky_build(coco, tmp_path / "clean")  # the same build with a backend that never fails
    from tests.fixtures.builds import rows_by_id

    rows, clean_rows = rows_by_id(layout), rows_by_id(clean)
    assert set(clean_rows) - set(rows) == {r["id"] for r in failed}
    without_bucket = lambda row: {k: v for k, v in row.items() if k != "difficulty_bucket"}  # noqa: E731 (cut over the build)
    assert all(without_bucket(rows[i]) == without_bucket(clean_rows[i]) for i in rows)  # as without the failure


def test_a_build_whose_backend_never_works_fails_with_one_line(coco, tmp_path, monkeypatch):
    from mfpo_data.errors import MfpoError

    monkeypatch.setitem(REGISTRY["scoring"], "flaky", "tests.fixtures.flaky_backend:FlakyDifficulty")
    monkeypatch.setattr(base, "GIVE_UP_AFTER", 4)
    with pytest.raises(MfpoError, match=r"^scoring: backend 'flaky' failed on 4 samples .* first error: backend_error: "
                                        r"RuntimeError: index out of range"):  # fmt: skip
        _flaky_build(coco, tmp_path / "out", fail_image="*")


def test_a_halved_batch_size_grows_back_after_calls_without_memory_errors(caplog):
    _cuda_oom()
    calls = []

    def spike(ids):  # the first two calls run out of memory at more than 2 samples (another stage's batch), no later one
        calls.append(len(ids))
        return len(ids) > 2 and len(calls) <= 2

    scorer = Scorer(fails=spike, error=_cuda_oom)
    stage = ScoringStage(scorer, batch_size=8)
    stage.grow_back_after = 3
    with caplog.at_level(logging.INFO, logger="mfpo_data.stages.base"):
        out = list(stage.run([_sample(i) for i in range(40)]))
    assert not any(s.dropped for s in out)
    # 8 -> 4 -> 2 (out of memory twice); 3 calls at 2 -> 4 (the first 8 samples end with a call of 2); 3 calls
    # in all at 4 -> 8, then full batches
    assert [len(b) for b in scorer.calls.batches] == [8, 4, 2, 2, 2, 2, 4, 4, 8, 8, 8]
    assert stage.batch_size == 8 and stage.stats["batch_size_grown"].total == 2
    assert [r.getMessage() for r in caplog.records if "again" in r.getMessage()] == [
        "scoring: 3 batches without running out of memory; batch_size is 4 again",
        "scoring: 3 batches without running out of memory; batch_size is 8 again",
    ]
    assert [_state(s) for s in out] == _alone(lambda batch_size: ScoringStage(Scorer(), batch_size), [_sample(i) for i in range(40)])


def test_a_batch_size_that_never_fits_is_tried_ever_more_rarely():
    _cuda_oom()
    scorer = Scorer(fails=lambda ids: len(ids) > 2, error=_cuda_oom)
    stage = ScoringStage(scorer, batch_size=4)
    stage.grow_back_after = 2
    out = list(stage.run([_sample(i) for i in range(40)]))
    assert not any(s.dropped for s in out)
    sizes = [len(b) for b in scorer.calls.batches]
    # a try of 4 after 2 calls at 2; each failed try doubles the wait: 4 calls, then 8, then 16
    assert sizes == [4, 2, 2] + [4, 2, 2, 2, 2] + [4, 2, 2] + [2] * 6 + [4, 2, 2] + [2] * 4
    assert [i for i, n in enumerate(sizes) if n == 4] == [0, 3, 8, 17]
    assert stage.grow_back_after == 16 and stage.batch_size == 2


def test_device_turn_lets_one_model_stage_on_a_gpu_at_a_time():
    import threading
    import time

    from mfpo_data.backends.loading import device_turn

    inside, seen = [], []

    def on_gpu(device):
        with device_turn(device):
            inside.append(device)
            seen.append(inside.count(device))
            time.sleep(0.02)
            inside.remove(device)

    threads = [threading.Thread(target=on_gpu, args=(d,)) for d in ["cuda:0"] * 4 + ["cuda:1"] * 4]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert seen == [1] * 8  # never two stages inside on one GPU

    both = threading.Barrier(2, timeout=10)  # on the CPU two stages are inside at once, or this barrier times out

    def on_cpu():
        with device_turn("cpu"):
            both.wait()

    threads = [threading.Thread(target=on_cpu) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not both.broken
