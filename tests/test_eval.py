"""`edgecpm eval` on the default model: its figures against our own numpy, the recipes' quality on the
text this test ships (tests/data/eval_text.txt, 1,098 tokens -> 2 chunks of 512 -> 510 scored positions),
and one-line errors for bad text / calibration files."""

from pathlib import Path

import numpy as np
import pytest

from edgecpm.app.cli import main
from edgecpm.export import export
from edgecpm.runtime import load
from edgecpm.runtime.evaluate import Totals, chunk_logits, chunks

TEXT = Path(__file__).parent / "data" / "eval_text.txt"


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return export(None, str(tmp_path_factory.mktemp("eval") / "fp32"), q_bits=32, quiet=True)


@pytest.fixture(scope="module")
def scored(fp32):
    """(reference engine, tokenizer, chunks, reference logits per chunk), prefill path."""
    ref, tok = load(fp32, context=512)
    parts = chunks(tok.encode(TEXT.read_text(), add_bos=False), 512)
    return ref, tok, parts, [chunk_logits(ref, c, "prefill") for c in parts]


def kl_of(artifact, scored) -> dict:
    _, _, parts, refs = scored
    engine, _ = load(artifact, context=512)
    t = Totals()
    for c, r in zip(parts, refs):
        t.add(r, chunk_logits(engine, c, "prefill"), np.asarray(c[257:]))
    return t.result()


def test_figures_equal_an_independent_computation(carried_default, fp32, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", str(carried_default), "--reference", str(fp32), "--text", str(TEXT), "--path", "prefill",
              "--json"])
    assert e.value.code == 0
    import json

    out = capsys.readouterr().out
    res = json.loads(out[out.index("{"):])
    a, tok = load(carried_default, context=512)
    r, _ = load(fp32, context=512)
    ids = tok.encode(TEXT.read_text(), add_bos=False)
    kls, nll, rnll, same = [], [], [], []
    for start in range(0, len(ids) - 511, 512):
        chunk = ids[start : start + 512]
        a.reset()
        r.reset()
        la, lr = a.step(chunk, logits_at=list(range(512))), r.step(chunk, logits_at=list(range(512)))  # [512, V]
        la, lr = la[256:511].astype(np.float64), lr[256:511].astype(np.float64)  # predict tokens 257..511
        la = la - np.log(np.exp(la - la.max(1, keepdims=True)).sum(1, keepdims=True)) - la.max(1, keepdims=True)
        lr = lr - np.log(np.exp(lr - lr.max(1, keepdims=True)).sum(1, keepdims=True)) - lr.max(1, keepdims=True)
        kls += list((np.exp(lr) * (lr - la)).sum(1))
        target = np.asarray(chunk[257:512])
        nll += list(-la[np.arange(255), target])
        rnll += list(-lr[np.arange(255), target])
        same += list(la.argmax(1) == lr.argmax(1))
    assert res["positions"] == len(kls) == 510
    assert res["kl_mean"] == pytest.approx(np.mean(kls), rel=1e-6, abs=1e-9)
    assert res["ppl"] == pytest.approx(np.exp(np.mean(nll)), rel=1e-6)
    assert res["ref_ppl"] == pytest.approx(np.exp(np.mean(rnll)), rel=1e-6)
    assert res["top1"] == pytest.approx(np.mean(same))


def test_carry_over_is_within_target_and_the_float_recipe_beats_round_to_nearest(carried_default, scored, tmp_path):
    carry = kl_of(carried_default, scored)
    assert carry["kl_mean"] <= 0.005, carry
    # the same GGUF re-quantized from its (dequantized) float weights: search + calibration vs plain RTN
    rtn = kl_of(export(None, str(tmp_path / "rtn"), q_bits=4, q_method="rtn", quiet=True), scored)
    search = kl_of(export(None, str(tmp_path / "search"), q_bits=4, quiet=True), scored)
    assert search["kl_mean"] < 0.8 * rtn["kl_mean"], (search, rtn)
    assert search["top1"] > rtn["top1"]


@pytest.mark.parametrize("content,why", [(b"", "is empty"), (b"\x00\x01binary\x00", "is binary"),
                                         (b"Too short to calibrate anything.", "fewer than one chunk")])
def test_bad_calibration_file_is_one_line_error_and_leaves_nothing(tmp_path, capsys, content, why):
    cal = tmp_path / "cal.txt"
    cal.write_bytes(content)
    out = tmp_path / "art"
    with pytest.raises(SystemExit) as e:
        main(["export", "--q-bits", "4", "--calibration", str(cal), "-o", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert why in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".art*"))


def test_failing_calibration_leaves_no_artifact(tmp_path, monkeypatch):
    from edgecpm.export import calibrate

    def boom(*a, **k):
        raise RuntimeError("calibration died")

    monkeypatch.setattr(calibrate, "tokens", boom)
    with pytest.raises(RuntimeError):
        export(None, str(tmp_path / "art"), q_bits=4, quiet=True)
    assert not (tmp_path / "art").exists() and not list(tmp_path.glob(".art*"))


def test_eval_text_too_short_is_one_line_error(carried_default, fp32, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("A few words only.")
    with pytest.raises(SystemExit) as e:
        main(["eval", str(carried_default), "--reference", str(fp32), "--text", str(short)])
    assert e.value.code == 2
    assert "fewer than one chunk" in capsys.readouterr().err
