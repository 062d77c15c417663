"""Hub model IDs as export sources, offline: a Hub cache laid out as huggingface_hub writes it
(`hub/models--ORG--NAME/{refs/main, snapshots/REV/...}`), HF_HUB_OFFLINE=1, HF_HOME pointing at it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

REV_A, REV_B = "a" * 40, "b" * 40


def cached_repo(home, repo: str, files: dict, rev: str, main: bool = True):
    """Put `files` (name -> source path) into the cache as snapshot `rev` of `repo`."""
    org, name = repo.split("/")
    root = home / "hub" / f"models--{org}--{name}"
    snap = root / "snapshots" / rev
    snap.mkdir(parents=True)
    for fname, src in files.items():
        os.symlink(src, snap / fname)  # the real cache links snapshot files to blobs
    if main:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text(rev)
    return snap


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory):
    from conftest import make_model

    from edgecpm.export.embedded import default_gguf

    home = tmp_path_factory.mktemp("hf-home")
    hf = tmp_path_factory.mktemp("tiny-llama")
    make_model("llama", hf)
    files = {p.name: p for p in hf.iterdir()}
    cached_repo(home, "tiny-org/tiny-llama", files, REV_A)
    cfg_b = hf.parent / "config-b.json"  # revision B: another context length, so the two are told apart
    cfg_b.write_text(json.dumps({**json.loads((hf / "config.json").read_text()), "max_position_embeddings": 128}))
    cached_repo(home, "tiny-org/tiny-llama", {**files, "config.json": cfg_b}, REV_B, main=False)
    cached_repo(home, "tiny-org/SmolLM2-135M-Instruct-GGUF",
                {"SmolLM2-135M-Instruct-Q4_1.gguf": default_gguf()}, REV_A)
    return home


def export_cli(home, *args):
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "edgecpm", "export", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def manifest(folder):
    return json.loads((folder / "edgecpm.json").read_text())


def test_safetensors_repo_from_the_cache_and_revision(hub_home, tmp_path):
    r = export_cli(hub_home, "tiny-org/tiny-llama", "-o", str(tmp_path / "a"), "--q-bits", "32")
    assert r.returncode == 0, r.stderr
    m = manifest(tmp_path / "a")
    assert REV_A in m["source"]["path"] and m["context_length"] == 256
    r = export_cli(hub_home, "tiny-org/tiny-llama", "--revision", REV_B, "-o", str(tmp_path / "b"), "--q-bits", "32")
    assert r.returncode == 0, r.stderr
    m = manifest(tmp_path / "b")
    assert REV_B in m["source"]["path"] and m["context_length"] == 128


def test_gguf_repo_with_a_quant_tag(hub_home, tmp_path):
    r = export_cli(hub_home, "tiny-org/SmolLM2-135M-Instruct-GGUF:Q4_1", "-o", str(tmp_path / "g"))
    assert r.returncode == 0, r.stderr
    m = manifest(tmp_path / "g")
    assert m["source"]["kind"] == "gguf" and m["source"]["path"].endswith("SmolLM2-135M-Instruct-Q4_1.gguf")


@pytest.mark.parametrize("source, needle", [
    ("no-org/missing-model", "not in the Hub cache"),
    ("tiny-org/SmolLM2-135M-Instruct-GGUF:Q8_0", "has no Q8_0 GGUF file"),
])
def test_missing_offline_is_one_line(hub_home, tmp_path, source, needle):
    r = export_cli(hub_home, source, "-o", str(tmp_path / "x"))
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "x").exists()


def test_revision_that_is_not_cached(hub_home, tmp_path):
    r = export_cli(hub_home, "tiny-org/tiny-llama", "--revision", "c" * 40, "-o", str(tmp_path / "x"))
    assert r.returncode == 2 and "revision" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_local_path_wins_over_a_hub_id(tmp_path, monkeypatch):
    from edgecpm.export import hub

    (tmp_path / "org").mkdir()
    shutil.copytree(tmp_path / "org", tmp_path / "org" / "name")
    monkeypatch.chdir(tmp_path)
    assert not hub.is_repo_id("org/name") and hub.is_repo_id("someone/else")
