"""A token or password inside a path or URL the user gave is never printed back, by any command, in any message:
every `MfpoError` and every log line passes through publish's redaction (`mfpo_data.secrets.scrub`)."""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

from mfpo_data.cli import app as data_app
from mfpo_train.cli import app as train_app
from mfpo_train.eval.cli import app as eval_app


SECRETS = {  # how a secret rides in a URL -> (the URL with {secret} in it, the secret)
    "hf token as password": ("https://user:{secret}@host.example/data", "hf_" + "Ab3" * 12),
    "plain password": ("https://alice:{secret}@host.example/data", "s3cr3t-Pa55word"),
    "token in the query": ("https://host.example/data?token={secret}", "q1w2e3r4t5y6u7i8o9"),
    "github token in the path": ("https://host.example/{secret}/data", "ghp_" + "Zx9" * 12),
}

COMMANDS = {  # where the user puts the URL -> (app, argv with {url})
    "build source.path": (data_app, ["build", "--set", "source.kind=jsonl", "--set", "source.path={url}"]),
    "build source.root": (data_app, ["build", "--set", "source.root={url}"]),
    "validate --recipe": (data_app, ["validate", "--recipe", "{url}.yaml"]),
    "inspect": (data_app, ["inspect", "{url}"]),
    "eval run --model": (eval_app, ["run", "--model", "{url}", "--benchmarks", "pope"]),
    "eval run --adapter": (eval_app, ["run", "--adapter", "{url}", "--benchmarks", "pope"]),
    "eval run --coco-root": (eval_app, ["run", "--model", "m", "--coco-root", "{url}", "--benchmarks", "pope"]),
    "eval run --pope-questions": (eval_app, ["run", "--model", "m", "--pope-questions", "{url}", "--benchmarks", "pope"]),
    "chair --answers": (eval_app, ["chair", "--answers", "{url}.jsonl"]),
    "chair --coco-root": (eval_app, ["chair", "--answers", "{url}.jsonl", "--coco-root", "{url}"]),
    "pope --questions": (eval_app, ["pope", "--questions", "{url}", "--answers", "a.jsonl"]),
    "amber --amber-root": (eval_app, ["amber", "--amber-root", "{url}", "--answers", "a.jsonl"]),
    "train --config": (train_app, ["--config", "{url}.yaml"]),
    "train data.dataset": (train_app, ["--config", "debug", "--set", "data.dataset={url}", "--dry-run"]),
    "train --resume-from": (train_app, ["--config", "debug", "--set", "data.dataset={url}", "--resume-from", "{url}"]),
}


@pytest.mark.parametrize("secret_kind", list(SECRETS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_secret_in_a_user_path_is_never_printed(tmp_path, monkeypatch, caplog, secret_kind, command):
    template, secret = SECRETS[secret_kind]
    url = template.format(secret=secret)
    app, argv = COMMANDS[command]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    caplog.set_level(logging.INFO)
    result = CliRunner().invoke(app, [a.format(url=url) for a in argv] + (
        ["--out", str(tmp_path / "eval")] if app is eval_app and argv[0] == "run" else []))
    assert result.exit_code == 1, result.output[-2000:]
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output[-2000:]
    assert "<redacted>" in errors[0], errors[0]
    for text in (result.output, caplog.text):
        assert secret not in text
