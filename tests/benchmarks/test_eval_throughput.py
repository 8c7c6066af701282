"""`benchmarks/eval_throughput.py` runs, times both ways at each batch size and checks the answers against batch 1."""

from __future__ import annotations

import json
import sys

from benchmarks import eval_throughput


def test_a_tiny_run_reports_every_batch_size(tmp_path, monkeypatch, capsys):
    out = tmp_path / "numbers.json"
    monkeypatch.setattr(sys, "argv", ["eval_throughput", "--items", "6", "--batch-sizes", "3", "--rounds", "2",
                                      "--max-new-tokens", "2", "--image-size", "32", "--hidden", "32", "--layers", "1",
                                      "--skip-probes", "--json", str(out)])
    import torch

    threads = torch.get_num_threads()
    try:
        eval_throughput.main()
    finally:
        torch.set_num_threads(threads)  # the benchmark times one thread; the tests after it keep theirs
    numbers = json.loads(out.read_text())
    assert set(numbers["generation"]) == {"1", "3"} and numbers["items"] == 6 and numbers["threads"] == 1
    assert numbers["generation"]["3"]["equal_answers"] == 6 and numbers["generation"]["1"]["run_cpu_ratio"] == 1.0
    printed = capsys.readouterr().out
    assert "| 3 |" in printed and "target: run at batch 3 >= 4.0x batch 1 in CPU time" in printed
    assert "load average (1, 5, 15 min): before" in printed
