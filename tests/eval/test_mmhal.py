"""MMHal-Bench: the reference template, a judge behind an OpenAI-compatible endpoint (on 127.0.0.1) and a tiny
random local judge; the judge is recorded and its key never printed."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from typer.testing import CliRunner

from mfpo_train.eval import mmhal
from mfpo_train.eval.cli import app


KEY = "sk-test0123456789abcdefghijklmnop"
TYPES = ["attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other"]


def _questions(tmp_path, n=8):
    rows = [{"question_type": TYPES[i % 8], "question_topic": "outdoor", "image_id": f"im{i}",
             "image_src": f"https://example.org/{i}.jpg", "image_content": ["Dog", "Tree"],
             "question": f"What is in picture {i}?", "gt_answer": "A dog under a tree.", "model_answer": ""}
            for i in range(n)]
    path = tmp_path / "response_template.json"
    path.write_text(json.dumps(rows))
    return path


def test_prompt_is_the_reference_template():
    q = {"image_content": ["Lynx", "Cat"], "question": "How many cats?", "gt_answer": "Two."}
    prompt = mmhal.judge_prompt(q, "One cat.")
    assert prompt.startswith("Please act as an impartial and objective judge")
    assert prompt.endswith("### Image Contents\nLynx, Cat\n\n### Question\nHow many cats?\n\n"
                           "### Standard Human-Generated Answer\nTwo.\n\n### LMM Response to Evaluate\nOne cat.\n")
    assert [mmhal.parse_rating(r) for r in ("Rating: 4, somewhat", "rating: 6", "Rating: 2 or Rating: 3", "none")] == [
        4, 6, None, None]


@pytest.fixture
def endpoint():
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen["auth"], seen["model"] = self.headers.get("Authorization"), body["model"]
            seen["temperature"] = body["temperature"]
            answer = body["messages"][0]["content"].rsplit("### LMM Response to Evaluate\n", 1)[1]
            review = "Rating: 5, very informative" if "good" in answer else (
                "Rating: 1, hallucination" if "bad" in answer else "I cannot decide.")
            reply = json.dumps({"model": body["model"], "choices": [{"message": {"content": review}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", seen
    server.shutdown()


def test_endpoint_judge_scores_and_never_prints_its_key(tmp_path, endpoint, monkeypatch):
    url, seen = endpoint
    monkeypatch.setenv("MFPO_TEST_JUDGE_KEY", KEY)
    answers = tmp_path / "answers.jsonl"
    texts = ["good", "bad", "good", "Assistant: good", "unsure", "bad", "good", "good"]
    answers.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "mmhal.json"
    res = CliRunner().invoke(app, ["mmhal", "-q", str(_questions(tmp_path)), "-a", str(answers), "--judge", "judge-7b",
                                   "--judge-url", url, "--judge-key-env", "MFPO_TEST_JUDGE_KEY", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert seen == {"auth": f"Bearer {KEY}", "model": "judge-7b", "temperature": 0.0}
    body = json.loads(out.read_text())
    # ratings 5 1 5 5 (Assistant: removed) 0 (unparsed) 1 5 5: mean 27 / 8, below 3: 3 of 8
    assert (body["score"], body["hallucination_rate"], body["unparsed"], body["n"]) == (3.38, 37.5, 1, 8)
    assert body["per_type"]["attribute"] == 5.0 and body["per_type"]["environment"] == 1.0
    assert body["judge"] == {"model": "judge-7b", "endpoint": url, "label": f"judge-7b @ {url.split('/')[2]}"}
    printed = "".join(res.output.split())  # the table title may wrap
    assert "judge-7b@127.0.0.1" in printed and "gpt-4-0314" in printed
    assert KEY not in res.output and KEY not in out.read_text()
    assert KEY not in (tmp_path / "mmhal.details.jsonl").read_text()


def test_unreachable_endpoint_is_one_line(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"answer": "x"}) + "\n" for _ in range(8)))
    res = CliRunner().invoke(app, ["mmhal", "-q", str(_questions(tmp_path)), "-a", str(answers), "--judge", "m",
                                   "--judge-url", "http://user:secret@127.0.0.1:9/v1"])
    assert res.exit_code == 1 and "error: judge endpoint http://127.0.0.1:9/v1: " in res.output
    assert "secret" not in res.output and res.output.strip().count("\n") == 0 and "Traceback" not in res.output


def test_tiny_random_local_judge(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from mfpo_train.tiny import make_tokenizer

    tok = make_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16384,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "judge")
    tok.save_pretrained(tmp_path / "judge")
    questions = mmhal.read_mmhal_questions(_questions(tmp_path, 2))
    answers = [{"id": q["id"], "answer": "A dog."} for q in questions]
    judge = mmhal.make_judge(str(tmp_path / "judge"), max_new_tokens=4)
    reviews = mmhal.review_all(judge, questions, answers, progress=False)
    result = mmhal.score_mmhal(questions, answers, reviews, mmhal.judge_info(str(tmp_path / "judge")))
    assert len(reviews) == 2 and all(isinstance(r, str) for r in reviews)
    assert result["judge"]["label"] == "judge (local)" and result["meta"]["settings"]["complete"] is False
    assert result["unparsed"] == sum(mmhal.parse_rating(r) is None for r in reviews)
    assert mmhal.review_all(judge, questions, answers, progress=False) == reviews  # greedy
