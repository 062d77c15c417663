"""Every bad input is one line on stderr naming the fix, exit 2, and nothing lost or half-written.

The CLI runs in-process through `edgecpm.app.cli.main` (its real entry point), so each case costs
milliseconds; export cases use copies of one tiny HF checkpoint with one thing broken.
"""

from __future__ import annotations

import io
import json
import shutil
import sys

import pytest

from edgecpm.app.cli import main


def run_cli(capsys, *argv, stdin: bytes | None = None, monkeypatch=None):
    """(exit code, stderr) of `edgecpm ARGV`."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    return e.value.code, capsys.readouterr().err


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in err, err


@pytest.fixture(scope="module")
def art(tiny):
    return tiny("llama", 32)[0]


@pytest.mark.parametrize("argv, stdin, needle", [
    (["generate", "-p", ""], None, "empty"),
    (["generate", "-p", "   "], None, "empty"),
    (["generate"], b"", "empty"),
    (["generate", "-p", "caf\udce9"], None, "UTF-8"),  # undecodable argv bytes arrive as surrogates
    (["generate"], b"caf\xe9 au lait", "UTF-8"),
    (["chat", "-p", ""], None, "empty"),
    (["chat"], b"\xff\xfe", "UTF-8"),
])
def test_prompts(capsys, monkeypatch, art, argv, stdin, needle):
    code, err = run_cli(capsys, argv[0], str(art), *argv[1:], "--local-only", stdin=stdin, monkeypatch=monkeypatch)
    assert_one_line_error(code, err, needle)


@pytest.mark.parametrize("flag", [
    ["-m", "0"], ["-m", "-3"], ["--temp", "-1"], ["--temp", "nan"], ["--temp", "inf"], ["--top-p", "0"],
    ["--top-p", "1.5"], ["--min-p", "-0.1"], ["--min-p", "2"], ["--top-k", "-1"], ["--repetition-penalty", "0"],
    ["--seed", "-1"], ["--context", "0"], ["--threads", "0"], ["--cloud-timeout", "0"], ["--memory-budget", "-5"],
])
@pytest.mark.parametrize("command", ["chat", "generate"])
def test_sampling_flags_are_rejected_not_clamped(capsys, art, command, flag):
    code, err = run_cli(capsys, command, str(art), "-p", "hi", *flag)
    assert_one_line_error(code, err, flag[0], "--help")


@pytest.mark.parametrize("argv", [["--runs", "0"], ["--prompt-lengths", "0"], ["--prompt-lengths", "12,x"],
                                  ["--decode-tokens", "0"], ["--depth", "-1"]])
def test_bench_flags(capsys, art, argv):
    code, err = run_cli(capsys, "bench", str(art), *argv)
    assert_one_line_error(code, err, argv[0])


def _broken_artifact(art, tmp_path, how: str):
    bad = tmp_path / "bad"
    shutil.copytree(art, bad)
    m = bad / "edgecpm.json"
    if how == "not-utf8":
        m.write_bytes(b'{"format": "edgecpm", "architecture": "\xff\xfe"}')
    elif how == "list":
        m.write_text("[1, 2, 3]")
    elif how == "files-without-bytes":
        raw = json.loads(m.read_text())
        raw["files"] = {name: {"sha256": meta["sha256"]} for name, meta in raw["files"].items()}
        m.write_text(json.dumps(raw))
    elif how == "wrong-type":
        raw = json.loads(m.read_text())
        raw["vocab_size"] = "many"
        m.write_text(json.dumps(raw))
    elif how == "a-file":
        shutil.rmtree(bad)
        bad.write_text("not a folder")
    return bad


@pytest.mark.parametrize("how, needle", [("not-utf8", "UTF-8"), ("list", "not an edgecpm manifest"),
                                         ("files-without-bytes", "'bytes'"), ("wrong-type", "vocab_size"),
                                         ("a-file", "is a file, not an artifact folder")])
@pytest.mark.parametrize("command", [["info"], ["generate", "-p", "hi", "--local-only"]])
def test_bad_artifacts(capsys, art, tmp_path, how, needle, command):
    bad = _broken_artifact(art, tmp_path, how)
    code, err = run_cli(capsys, command[0], str(bad), *command[1:])
    assert_one_line_error(code, err, needle)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A tiny HF Llama checkpoint folder (config.json, safetensors, tokenizer)."""
    from conftest import make_model

    folder = tmp_path_factory.mktemp("hf-llama")
    make_model("llama", folder)
    return folder


def _broken_checkpoint(hf, tmp_path, how: str):
    src = tmp_path / "ckpt"
    shutil.copytree(hf, src)
    cfg_path = src / "config.json"
    cfg = json.loads(cfg_path.read_text())
    edits = {"hidden-abc": {"hidden_size": "abc"}, "zero-heads": {"num_attention_heads": 0},
             "hidden-mismatch": {"hidden_size": cfg["hidden_size"] * 2, "head_dim": 16},
             "layers-mismatch": {"num_hidden_layers": cfg["num_hidden_layers"] + 1}}
    if how == "config-list":
        cfg_path.write_text("[]")
    elif how in edits:
        cfg_path.write_text(json.dumps({**cfg, **edits[how]}))
    elif how == "tokenizer-json":
        (src / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": ')
    elif how == "tokenizer-config":
        (src / "tokenizer_config.json").write_text("{not json")
    return src


@pytest.mark.parametrize("how, needle", [
    ("config-list", "JSON object"), ("hidden-abc", "hidden_size"), ("zero-heads", "num_attention_heads"),
    ("hidden-mismatch", "does not match the weights"), ("layers-mismatch", "num_hidden_layers"),
    ("tokenizer-json", "tokenizer.json"), ("tokenizer-config", "tokenizer_config.json"),
])
def test_bad_checkpoints_fail_before_anything_is_written(capsys, hf, tmp_path, how, needle):
    src = _broken_checkpoint(hf, tmp_path, how)
    out = tmp_path / "out"
    code, err = run_cli(capsys, "export", str(src), "-o", str(out), "--q-bits", "32")
    assert_one_line_error(code, err, needle)
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_export_output_place(capsys, hf, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    for out, needle in ((a_file, "is a file"), (a_file / "sub", "cannot create")):
        assert_one_line_error(*run_cli(capsys, "export", str(hf), "-o", str(out), "--q-bits", "32"), needle)
    assert a_file.read_text() == "keep me"
    code, err = run_cli(capsys, "export", str(hf), "-o", str(tmp_path / "x"), "--context-length", "0")
    assert_one_line_error(code, err, "--context-length")


def test_existing_artifact_is_replaced_only_with_force_and_partials_are_cleaned(capsys, hf, tmp_path):
    out = tmp_path / "art"
    dead = tmp_path / ".art.partial-999999999"  # a killed export's leftovers (no such pid)
    dead.mkdir()
    (dead / "model.onnx.data").write_bytes(b"\0" * 1024)
    code, _ = run_cli(capsys, "export", str(hf), "-o", str(out), "--q-bits", "32")
    assert code == 0 and (out / "edgecpm.json").is_file() and not dead.exists()
    before = (out / "edgecpm.json").read_bytes()
    code, err = run_cli(capsys, "export", str(hf), "-o", str(out), "--q-bits", "32")
    assert_one_line_error(code, err, "--force")
    assert (out / "edgecpm.json").read_bytes() == before  # nothing lost
    code, _ = run_cli(capsys, "export", str(hf), "-o", str(out), "--q-bits", "32", "--force")
    assert code == 0 and (out / "edgecpm.json").is_file()


@pytest.mark.parametrize("argv, needle", [
    (["--draft", "eagle"], "--draft"),
    (["--draft-tokens", "0"], "--draft-tokens"),
    (["--draft-model", "/nonexistent/draft"], "--draft-model"),
    (["--draft", "ngram", "--draft-model", "/x"], "either"),
])
@pytest.mark.parametrize("command", ["chat", "generate"])
def test_draft_flags(capsys, art, command, argv, needle):
    code, err = run_cli(capsys, command, str(art), "-p", "hi", "--local-only", *argv)
    assert_one_line_error(code, err, needle)


def test_draft_model_with_another_tokenizer(capsys, art, tmp_path):
    """A draft artifact whose tokenizer differs (its files re-hashed in the manifest, so it loads)."""
    import hashlib

    other = tmp_path / "other"
    shutil.copytree(art, other)
    tj = other / "tokenizer.json"
    tok = json.loads(tj.read_text())
    vocab = tok["model"]["vocab"]
    a, b = list(vocab)[10:12]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # two tokens swap ids: another tokenizer, same size
    tj.write_text(json.dumps(tok))
    m = json.loads((other / "edgecpm.json").read_text())
    data = tj.read_bytes()
    m["files"]["tokenizer.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (other / "edgecpm.json").write_text(json.dumps(m))
    code, err = run_cli(capsys, "generate", str(art), "-p", "hi", "--local-only", "--draft-model", str(other))
    assert_one_line_error(code, err, "another tokenizer")
