"""What keeps an export's peak memory down (issue 10: <= 4.5 GB for the 2B shape): float tensors read
from safetensors in slices (equal to the library's own reading), the calibration graph cut to what its
taps need (no lm_head), and the gptq inputs written as plain .npy files whose rows are in token order."""

import json

import numpy as np
import pytest

from edgecpm.contract import UserError
from edgecpm.export import calibrate, checkpoint


@pytest.fixture()
def shard(tmp_path):
    """A safetensors file with bf16, fp16, fp32 and int64 tensors; returns (folder, torch tensors)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    tensors = {"a.bf16": torch.randn(37, 24, generator=g).bfloat16(),
               "b.fp16": torch.randn(5, 3, 8, generator=g).half(),
               "c.fp32": torch.randn(300, generator=g), "d.i64": torch.arange(12).reshape(3, 4)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return tmp_path, tensors


def test_sliced_reads_equal_safetensors(shard, monkeypatch):
    folder, tensors = shard
    monkeypatch.setattr(checkpoint, "ROW_BYTES", 40)  # a few rows per slice: many slices per tensor
    src = checkpoint.open_source(folder)
    for name, t in tensors.items():
        got = src.get(name)
        assert got.dtype == np.float32 and got.shape == tuple(t.shape)
        np.testing.assert_array_equal(got, t.float().numpy(), err_msg=name)


def test_a_shard_cut_short_is_a_one_line_error(shard):
    folder, _ = shard
    path = folder / "model.safetensors"
    src = checkpoint.open_source(folder)
    names = sorted(src.names())  # the index is read while the file is whole (safetensors checks it then)
    path.write_bytes(path.read_bytes()[:-700])  # cut short later: the sliced reads must notice
    with pytest.raises(UserError, match="the file ends inside it"):
        for name in names:
            if name != "d.i64":
                src.get(name)


@pytest.fixture(scope="module")
def int8_probe(tiny, tmp_path_factory):
    art, _ = tiny("qwen3_5", 4)  # int8 lm_head: a MatMulNBits node
    work = tmp_path_factory.mktemp("probe")
    for f in art.iterdir():
        (work / f.name).write_bytes(f.read_bytes())
    return work


def test_probe_graph_keeps_only_what_the_taps_read(int8_probe, monkeypatch):
    import onnx
    import onnxruntime as ort

    path, taps = calibrate._probe(int8_probe, raw=True)
    model = onnx.load(path, load_external_data=False)
    assert {o.name for o in model.graph.output} == set(taps)
    assert "lm_head" not in {n.name.removeprefix("n/") for n in model.graph.node}
    assert any("lm_head" in layers for layers in taps.values())  # its input is still read out
    monkeypatch.setattr(calibrate, "_keep_only", lambda graph, outputs: None)
    (int8_probe / "probe.onnx").rename(int8_probe / "cut.onnx")
    whole, _ = calibrate._probe(int8_probe, raw=True)
    assert len(onnx.load(whole, load_external_data=False).graph.node) > len(model.graph.node)
    runs = []
    for p in (str(int8_probe / "cut.onnx"), whole):
        s = ort.InferenceSession(p)
        runs.append(s.run(list(taps), calibrate._feeds(s, list(range(3, 40)))))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_gptq_inputs_are_written_in_token_order(tiny, tmp_path):
    art, _ = tiny("llama", 32)
    src = json.loads((art / "edgecpm.json").read_text())["source"]["path"]
    ids = list(np.random.default_rng(0).integers(3, 200, 2 * calibrate.CHUNK))

    def inputs(part, name):
        got = calibrate._measure(src, None, part, str(tmp_path / f"m-{name}"), str(tmp_path / name))
        return {layer: np.load(p) for layer, p in got.items()}

    both, first, second = inputs(ids, "both"), inputs(ids[:512], "first"), inputs(ids[512:], "second")
    means = calibrate._measure(src, None, ids, str(tmp_path / "m-sq"), None)
    assert set(both) == set(first) == set(means) - {"lm_head"} and len(both) > 4  # the head reads 1 row
    for layer, x in both.items():
        assert x.shape == (len(ids), first[layer].shape[1])
        np.testing.assert_allclose(x[:512], first[layer], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(x[512:], second[layer], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose((x.astype(np.float64) ** 2).mean(0), means[layer], rtol=1e-4, atol=1e-7)
