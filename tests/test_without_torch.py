"""Without torch (the core install), every command that needs it says so in one line naming the extra, in the
same words as mfpo-data's backends, with an install hint that fits a checkout; no traceback, nothing written.

torch is hidden from a subprocess by a `sitecustomize` whose import hook refuses it (and so everything that
imports it), as on a machine where it was never installed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.paths import REPO


BLOCKER = '''
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())
'''

HINT = 'pip install -e ".[{}]" in the mfpo checkout'
CASES = {  # command -> its one line
    "train": (["mfpo_train.cli", "--config", "debug"],
              "error: mfpo-train needs torch, transformers, accelerate, peft: " + HINT.format("train")),
    "make-tiny-model": (["mfpo_train.cli", "make-tiny-model", "{tmp}/tiny"],
                        "error: mfpo-train make-tiny-model needs torch, transformers: " + HINT.format("train")),
    "eval run": (["mfpo_train.eval.cli", "run", "--model", "{tmp}/tiny", "--benchmarks", "pope", "--out", "{tmp}/eval"],
                 "error: mfpo-eval run needs torch, transformers, peft: " + HINT.format("train,eval")),
    "data build": (["mfpo_data.cli", "build", "--recipe", "coco_grounded", "--output", "{tmp}/build"],
                   "error: grounding backend 'grounding_dino' needs torch, transformers: " + HINT.format("grounding")),
}


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory):
    hook = tmp_path_factory.mktemp("no-torch")
    (hook / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(REPO)])}


def test_the_blocker_hides_torch(no_torch_env):
    found = subprocess.run([sys.executable, "-c", "import transformers"],
                           capture_output=True, text=True, env=no_torch_env, timeout=120)
    assert found.returncode == 1 and "No module named 'torch'" in found.stderr


@pytest.mark.parametrize("case", list(CASES))
def test_a_command_without_torch_is_one_line(no_torch_env, tmp_path, case):
    args, line = CASES[case]
    result = subprocess.run([sys.executable, "-m", *(a.format(tmp=tmp_path) for a in args)], capture_output=True,
                            text=True, env=no_torch_env, timeout=120, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]
    assert [ln for ln in result.stderr.splitlines() if ln.startswith("error:")] == [line]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
