"""What publish writes: no secret in any file, only shards the build wrote (sha256-checked), and nothing
outside the dry-run folder (no `datasets` cache left behind, the build folder untouched)."""

import hashlib
import json
import logging
import tempfile

import pyarrow.parquet as pq
import pytest
import yaml

from mfpo_data.errors import MfpoError
from mfpo_data.publishing.publish import publish
from mfpo_data.secrets import public_recipe, scrub
from tests.fixtures.fake_build import make_fake_build


SECRETS = {
    "hf": "hf_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3f",
    "hf_org": "api_org_" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDc",
    "github": "ghp_" + "0123456789abcdefghijABCDEFGHIJklmnop",
    "github_pat": "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ",
    "openai": "sk-proj-" + "abcdefghijklmnopqrstuvwxyz0123456789ABCD",
    "aws": "AKIA" + "IOSFODNN7EXAMPLE",
    "slack": "xoxb-" + "123456789012-abcdefghijkl",
    "google": "AIza" + "SyA1234567890abcdefghijklmnopqrstuv",
    "gitlab": "glpat-" + "abcdefghij0123456789",
    "jwt": "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiIxMjM0NTY3ODkwIn0." + "dBjftJeZ4CVPmB92K27uhbUJU1p1r",
    "url_password": "s3cr3t-pw",
    "assignment": "hunter2pass",
    "json_key": "q9w8e7r6",
    "private_key": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    "sbatch_account": "acct-secret-42",
    "local_path": "/home/alice/private",
}


def _secret_recipe() -> str:
    s = SECRETS
    recipe = {
        "seed": 0,
        "source": {"kind": "coco", "root": f"{s['local_path']}/coco", "split": "val2017"},
        "keywords": {"backend": "coco_categories", "note": f"key {s['github']} and {s['github_pat']}"},
        "grounding": {"backend": "coco_gt", "model_id": f"https://alice:{s['url_password']}@models.example.com/dino"},
        "segmentation": {"backend": "coco_gt", "model_id": f"{s['local_path']}/sam", "revision": None},
        "perturbation": {"backend": "diffusion_noise", "t": 500, "comment": f"PASSWORD={s['assignment']} {s['openai']}"},
        "scoring": {"backend": "heuristic", "extra": f'{{"api_key": "{s["json_key"]}"}} {s["aws"]} {s["slack"]}'},
        "filters": {"min_mask_area_ratio": 0.001, "max_mask_area_ratio": 0.9,
                    "key": f"-----BEGIN PRIVATE KEY-----\n{s['private_key']}\n-----END PRIVATE KEY-----"},
        "output": {"dir": f"{s['local_path']}/out"},
        "executor": {"kind": "slurm", "tasks": 2, "env_command": f"export HF_TOKEN={s['hf']} && source {s['local_path']}/venv",
                     "sbatch_args": {"account": s["sbatch_account"]}},
        "versions": {"mfpo": "0.1.0", "note": f"{s['google']} {s['gitlab']} {s['jwt']} {s['hf_org']}"},
    }  # fmt: skip
    return yaml.safe_dump(recipe, sort_keys=False)


def test_scrub_replaces_every_token_kind_and_keeps_the_rest():
    for name, secret in SECRETS.items():
        if name in ("sbatch_account", "local_path", "url_password", "assignment", "json_key", "private_key"):
            continue  # recognised by their context, below
        assert secret not in scrub(f"value: {secret} end"), name
    assert scrub("https://bob:pw123@host/x") == "https://<redacted>@host/x"
    assert scrub("HF_TOKEN=abc export") == "HF_TOKEN=<redacted> export"
    assert scrub('"api_key": "abc"') == '"api_key": "<redacted>"'
    assert "MIIE" not in scrub("-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----")
    kept = "max_answer_tokens: 64\ntokenizer: bert\nrevision: 0123456789abcdef0123456789abcdef01234567\nsk-a"
    assert scrub(kept) == kept
    assert scrub("x secret-value y", "secret-value") == "x <redacted> y"


def test_no_secret_reaches_any_file_publish_writes(tmp_path, caplog):
    build = make_fake_build(tmp_path / "build")
    build.recipe_file.write_text(_secret_recipe())
    stats = json.loads(build.stats_file.read_text())
    stats["backends"]["keywords"]["hint"] = f"token {SECRETS['hf']} at {SECRETS['local_path']}/x"
    stats["backends"]["source"] = {"kind": "coco", "root": f"{SECRETS['local_path']}/coco"}
    build.stats_file.write_text(json.dumps(stats))
    with caplog.at_level(logging.DEBUG):
        result = publish(build.root, "org/name", dry_run_dir=tmp_path / "up")
    written = [p for p in (tmp_path / "up").rglob("*") if p.is_file()]
    assert {p.relative_to(tmp_path / "up").as_posix() for p in written} == set(result.files)
    blobs = {p.name: p.read_bytes() for p in written}
    blobs["log"] = caplog.text.encode()
    for name, secret in SECRETS.items():
        for where, blob in blobs.items():
            assert secret.encode() not in blob, (name, where)
    card = (tmp_path / "up" / "README.md").read_text()
    assert "executor" not in yaml.safe_load(card.split("```yaml\n")[-1].split("```")[0])
    assert "`<local>/coco`" in card and "t: 500" in card  # what describes the data is still there


def test_public_recipe_keeps_only_what_decides_the_rows():
    recipe = yaml.safe_load(_secret_recipe())
    public = public_recipe(recipe)
    assert "executor" not in public and "output" not in public
    assert public["source"]["root"] == "<local>/coco" and public["segmentation"]["model_id"] == "<local>/sam"
    assert public["perturbation"]["t"] == 500 and public["seed"] == 0


# ----------------------------------------------------------------------------------------------- tampering


def _flip_byte(build):
    shard = build.final_shards()[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))


def _swap_answers(build):
    shard = build.final_shards()[0]
    table = pq.read_table(shard)
    chosen, rejected = table.schema.get_field_index("chosen"), table.schema.get_field_index("rejected")
    swapped = table.set_column(chosen, "chosen", table.column("rejected")).set_column(rejected, "rejected", table.column("chosen"))
    pq.write_table(swapped, shard)


def _extra_shard(build):
    shard = build.final_shards()[0]
    (shard.parent / "train-00002-of-00003.parquet").write_bytes(shard.read_bytes())


def _delete_shard(build):
    build.final_shards()[1].unlink()


def _truncate_shard(build):
    shard = build.final_shards()[0]
    shard.write_bytes(shard.read_bytes()[:-40])


def _no_manifest(build):
    build.manifest_file.unlink()


def _edited_manifest(build):
    manifest = json.loads(build.manifest_file.read_text())
    name = next(n for n in manifest["files"] if n.startswith("data/"))
    manifest["files"][name]["sha256"] = hashlib.sha256(b"other").hexdigest()
    build.manifest_file.write_text(json.dumps(manifest))


TAMPERING = {
    "flipped_byte": (_flip_byte, "changed after the build"),
    "swapped_answers": (_swap_answers, "changed after the build"),
    "extra_shard": (_extra_shard, "not written by this build"),
    "deleted_shard": (_delete_shard, "is missing: the build wrote it"),
    "truncated_shard": (_truncate_shard, "not a readable parquet file"),
    "no_manifest": (_no_manifest, "records no shard checksums"),
    "edited_manifest": (_edited_manifest, "changed after the build"),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_a_tampered_build_is_never_published(tmp_path, kind):
    build = make_fake_build(tmp_path / "build")
    tamper, message = TAMPERING[kind]
    tamper(build)
    with pytest.raises(MfpoError, match=message) as info:
        publish(build.root, "org/name", dry_run_dir=tmp_path / "up")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "up").exists()


def test_dry_run_writes_only_inside_its_folder(tmp_path, monkeypatch):
    import datasets

    build = make_fake_build(tmp_path / "build")
    before = {p: p.read_bytes() for p in build.root.rglob("*") if p.is_file()}
    cache, tmp, cwd = tmp_path / "hf-cache", tmp_path / "tmp", tmp_path / "cwd"
    for folder in (cache, tmp, cwd):
        folder.mkdir()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.chdir(cwd)
    publish(build.root, "org/name", dry_run_dir=tmp_path / "up")
    assert [p for p in cache.rglob("*") if p.is_file()] == []
    assert list(tmp.iterdir()) == [] and list(cwd.iterdir()) == []
    assert {p: p.read_bytes() for p in build.root.rglob("*") if p.is_file()} == before
