"""Overlap inside a rank (`pipeline/overlap.py`): the stages run in threads of their own, and nothing a
build writes changes; errors, early stops and batch time-outs behave."""

import gc
import threading
import time

import numpy as np
import pytest

from mfpo_data.pipeline.assemble import build_pipeline
from mfpo_data.pipeline.build import build_dataset
from mfpo_data.pipeline.overlap import Channel, Prefetch, with_prefetch
from mfpo_data.config import load_recipe
from mfpo_data.schema import Sample
from mfpo_data.stages.base import MapStage
from mfpo_data.stages.s7_writer import ShardWriter
from tests.fixtures.builds import rows_by_id
from tests.fixtures.coco_folder import make_coco_folder


def _mfpo_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mfpo-")]


def _wait_for_no_threads(timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while _mfpo_threads() and time.monotonic() < end:
        gc.collect()
        time.sleep(0.02)
    return not _mfpo_threads()


def _sample(i: int) -> Sample:
    return Sample(f"s{i}", "test", str(i), "caption", "q", "yes", "no", image=np.zeros((4, 4, 3), np.uint8))


# -- the channel --------------------------------------------------------------------------------------


def test_a_channel_keeps_the_order_and_runs_upstream_on_another_thread():
    seen_on = set()

    def upstream():
        for i in range(200):
            seen_on.add(threading.get_ident())
            if i % 17 == 0:
                time.sleep(0.001)
            yield i

    channel = Channel(upstream(), depth=3)
    assert _mfpo_threads() == []  # nothing runs before the first next()
    assert list(channel) == list(range(200))
    assert seen_on and threading.get_ident() not in seen_on
    assert _wait_for_no_threads()


def test_an_upstream_error_is_raised_in_the_consumer_with_its_type():
    def upstream():
        yield 1
        raise KeyError("sample s2 broke")

    channel = Channel(upstream(), depth=2)
    assert next(channel) == 1
    with pytest.raises(KeyError, match="s2 broke"):
        next(channel)
    with pytest.raises(StopIteration):
        next(channel)  # and it stays finished
    assert _wait_for_no_threads()


def test_a_consumer_that_stops_early_stops_the_thread_and_closes_the_generators_behind_it():
    closed, produced = [], []

    def upstream():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.append(threading.get_ident())

    for stop in ("close", "garbage"):
        closed.clear()
        produced.clear()
        outer = Channel(Channel(upstream(), depth=4, name="inner"), depth=4, name="outer")
        assert [next(outer) for _ in range(3)] == [0, 1, 2]
        if stop == "close":
            outer.close()
        del outer
        assert _wait_for_no_threads(), stop
        assert len(closed) == 1, stop  # the upstream generator ran its finally block
        assert len(produced) < 100, stop  # bounded: it did not run ahead to the end


def test_poll_gives_up_after_its_timeout_and_then_gets_the_item():
    gate = threading.Event()

    def upstream():
        yield "first"
        gate.wait(5)
        yield "second"

    channel = Channel(upstream(), depth=1)
    assert channel.poll(1.0) == "first"
    start = time.perf_counter()
    assert channel.poll(0.2) is None
    assert 0.15 < time.perf_counter() - start < 2.0
    gate.set()
    assert channel.poll(5.0) == "second"
    with pytest.raises(StopIteration):
        channel.poll(1.0)


def test_prefetch_steps_record_where_the_time_went():
    def slow_source():
        for i in range(5):
            time.sleep(0.02)
            yield i

    step = Prefetch(depth=2, after="source")
    assert list(step(slow_source())) == list(range(5))
    assert step.name == "prefetch after source"
    assert step.stats["starved_s"].total >= 0.05  # the consumer waited for the slow source
    assert step.stats["blocked_s"].total < 0.05


def test_with_prefetch_puts_a_step_between_each_two():
    steps = with_prefetch(["a", "b", "c"], [4, 8])
    assert steps[0] == "a" and steps[2] == "b" and steps[4] == "c" and len(steps) == 5
    assert [s.depth for s in steps[1::2]] == [4, 8]


# -- batches with a time-out --------------------------------------------------------------------------


class _Recording(MapStage):
    name = "recording"

    def __init__(self, batch_size):
        super().__init__(None, batch_size)
        self.batches = []

    def process_batch(self, batch):
        self.batches.append([s.id for s in batch])


def _trickle(n, pause_after):
    for i in range(n):
        yield _sample(i)
        if i == pause_after:
            time.sleep(0.6)


def test_without_a_time_out_batches_are_full_whatever_the_timing():
    stage = _Recording(batch_size=4)
    out = list(stage.run(Channel(_trickle(10, pause_after=1), depth=8)))
    assert [s.id for s in out] == [f"s{i}" for i in range(10)]
    assert [len(b) for b in stage.batches] == [4, 4, 2]


def test_a_time_out_sends_a_partial_batch_when_the_input_pauses():
    stage = _Recording(batch_size=4)
    stage.batch_timeout_s = 0.2
    out = list(stage.run(Channel(_trickle(10, pause_after=1), depth=8)))
    assert [s.id for s in out] == [f"s{i}" for i in range(10)]
    assert stage.batches[0] == ["s0", "s1"]  # sent while the input paused
    assert sum(map(len, stage.batches)) == 10 and all(len(b) <= 4 for b in stage.batches)
    assert stage.stats["timeout_batches"].total >= 1


def test_a_time_out_needs_a_channel_upstream_and_is_ignored_on_a_plain_iterator():
    stage = _Recording(batch_size=4)
    stage.batch_timeout_s = 0.01
    list(stage.run(_trickle(6, pause_after=1)))
    assert [len(b) for b in stage.batches] == [4, 2]


# -- the build -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_coco_folder(tmp_path_factory.mktemp("coco"), n_images=6)


def _overrides(root, *extra):
    return [f"source.root={root}", "source.split=val2017", "output.progress=false", *extra]


def test_rows_are_the_same_bytes_with_and_without_the_overlap_and_across_task_counts(coco, tmp_path):
    plain = build_dataset("coco", _overrides(coco, "executor.overlap=false", "output.encode_threads=0"), tmp_path / "plain")
    overlapped = build_dataset("coco", _overrides(coco), tmp_path / "overlapped")
    three = build_dataset("coco", _overrides(coco, "executor.tasks=3", "executor.prefetch=1", "output.encode_threads=3"),
                          tmp_path / "three")  # fmt: skip
    a, b, c = rows_by_id(plain), rows_by_id(overlapped), rows_by_id(three)
    assert len(a) == 24 and a.keys() == b.keys() == c.keys()
    for key in a:
        assert a[key] == b[key] == c[key], key
    assert (plain.root / "rejects.jsonl").read_bytes() == (overlapped.root / "rejects.jsonl").read_bytes()
    assert plain.read_stats()["rows"] == overlapped.read_stats()["rows"] == 24
    assert _wait_for_no_threads()


def test_the_pipeline_has_a_prefetch_between_stages_only_with_overlap(coco):
    on = build_pipeline(load_recipe("coco", _overrides(coco, "grounding.batch_timeout_s=0.5")))
    assert [type(s).__name__ for s in on[1::2]] == ["Prefetch"] * (len(on) // 2)
    assert not any(isinstance(s, Prefetch) for s in on[0::2])
    grounding = next(s for s in on if getattr(s, "name", "") == "grounding")
    assert grounding.batch_timeout_s == 0.5
    before_grounding = on[on.index(grounding) - 1]
    assert before_grounding.depth == 2 * max(grounding.batch_size, 4)
    off = build_pipeline(load_recipe("coco", _overrides(coco, "executor.overlap=false")))
    assert not any(isinstance(s, Prefetch) for s in off)
    assert isinstance(off[-1], ShardWriter) and isinstance(on[-1], ShardWriter)


def test_a_failing_stage_fails_the_overlapped_rank_with_its_own_error(coco, tmp_path, monkeypatch):
    from mfpo_data.stages.s6_scoring import ScoringStage

    def broken(self, data, rank=0, world_size=1):
        for i, sample in enumerate(data):
            if i == 3:
                raise OSError("disk went away")
            yield sample

    monkeypatch.setattr(ScoringStage, "run", broken)
    with pytest.raises(OSError, match="disk went away"):
        build_dataset("coco", _overrides(coco), tmp_path / "out")
    assert _wait_for_no_threads()


@pytest.mark.parametrize("override, key", [
    ("executor.prefetch=0", "executor.prefetch"),
    ("output.encode_threads=-1", "output.encode_threads"),
    ("grounding.batch_timeout_s=0", "grounding.batch_timeout_s"),
    ("perturbation.batch_timeout_s=-2", "perturbation.batch_timeout_s"),
    ("scoring.batch_size=0", "scoring.batch_size"),
])  # fmt: skip
def test_bad_overlap_settings_name_their_key(override, key):
    from mfpo_data.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_recipe("coco", [override])


def test_two_stage_threads_that_share_a_model_wait_for_one_load():
    from mfpo_data.backends.loading import load_once

    calls = []

    def slow_loader():
        calls.append(threading.get_ident())
        time.sleep(0.2)
        return object()

    key = ("test-model", time.perf_counter())
    got = []
    threads = [threading.Thread(target=lambda: got.append(load_once(key, slow_loader))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 4 and all(g is got[0] for g in got)


def test_stages_that_share_a_backend_call_it_one_at_a_time():
    """The grounder serves grounding and the removal check, each in its own thread: never both at once."""
    busy, overlaps = [], []

    class Shared:
        def work(self, batch):
            if busy:
                overlaps.append([s.id for s in batch])
            busy.append(1)
            time.sleep(0.01)
            busy.pop()

    class Calls(MapStage):
        name = "calls"

        def process_batch(self, batch):
            self.backend.work(batch)

    backend = Shared()
    first, second = Calls(backend, batch_size=2), Calls(backend, batch_size=3)
    steps = with_prefetch([iter([_sample(i) for i in range(40)]), first, second], [4, 4])
    data = None
    for step in steps:
        data = step(data) if callable(step) else step
    assert len(list(data)) == 40
    assert overlaps == []
