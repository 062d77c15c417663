"""The runtime gives back the weights file's pages once onnxruntime has repacked the weights, and
(onnxruntime >= 1.32) maps the file itself so that they go back while the load reads them."""

import os
import sys
import time

import numpy as np
import pytest
from native import need_native

from edgecpm.contract import WEIGHTS_FILE
from edgecpm.runtime import Engine, memory
from edgecpm.runtime import engine as engine_module
from edgecpm.runtime.memory import RELEASE_EVERY, WeightsMap, release_file_pages

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")


def _resident(path) -> int:
    """Bytes of `path` resident in this process's mappings (smaps Rss)."""
    total, cur = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts[0].endswith(":"):
                cur = len(parts) >= 6 and parts[5] == str(path)
            elif cur and parts[0] == "Rss:":
                total += int(parts[1]) * 1024
    return total


def _mappings(path) -> list[tuple[int, int, int]]:
    """(start, end, file offset) of this process's mappings of `path`."""
    out = []
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts[0].endswith(":") and len(parts) >= 6 and parts[5] == str(path):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi, int(parts[2], 16)))
    return out


@linux
def test_weights_map_gives_pages_back_while_a_load_reads_them(tmp_path):
    f = tmp_path / "model.onnx.data"
    f.write_bytes(os.urandom(64 << 20))
    f = f.resolve()
    assert WeightsMap.open(f, "1.31.1") is None  # older onnxruntime copies in-memory data: not used there
    m = WeightsMap.open(f, "1.32.0")
    step, page = 1 << 20, 4096

    def read_all(sample: bool) -> int:  # a "repacking": every page once, 1 MiB at a time
        peak = 0
        for off in range(0, m.buffer.size, step):
            int(m.buffer[off:off + step:page].sum())
            if sample:
                peak = max(peak, _resident(f))
                time.sleep(0.002)
        return peak

    read_all(False)
    assert _resident(f) > 0.9 * m.buffer.size  # the control: reading keeps every page resident
    assert m.release() == m.buffer.size and _resident(f) < 0.05 * m.buffer.size
    with m.releasing(every=0.001):
        peak = read_all(True)
    assert peak < 0.5 * m.buffer.size and _resident(f) < 0.05 * m.buffer.size, peak


@linux
def test_engine_runs_the_weights_in_place_from_its_own_mapping(carried_default, monkeypatch):
    """onnxruntime maps nothing of the file itself (the engine's whole-file mapping is the only new one)
    and copies nothing: the logits equal those of a load where onnxruntime maps the file."""
    path = (carried_default / WEIGHTS_FILE).resolve()
    before = set(_mappings(path))
    e = Engine(carried_default)
    new = [m for m in _mappings(path) if m not in before]
    assert e.weights is not None and new == [(e.weights.buffer.ctypes.data, new[0][1], 0)], new
    assert new[0][1] - new[0][0] >= path.stat().st_size
    ids = list(range(100, 140))
    ours = [e.prefill(ids)] + [e.step([t]) for t in (5, 6, 7)]
    monkeypatch.setattr(engine_module.WeightsMap, "open", classmethod(lambda cls, *a: None))
    plain = Engine(carried_default)
    assert plain.weights is None
    theirs = [plain.prefill(ids)] + [plain.step([t]) for t in (5, 6, 7)]
    assert all((a == b).all() for a, b in zip(ours, theirs))


@linux
def test_weights_file_pages_are_released_after_load_and_generation_still_exact(carried_default):
    import onnxruntime as ort

    from edgecpm.contract import MODEL_FILE

    path = (carried_default / WEIGHTS_FILE).resolve()
    size = path.stat().st_size
    raw = ort.InferenceSession(str(carried_default / MODEL_FILE), providers=["CPUExecutionProvider"])
    kept = _resident(path)  # onnxruntime alone: repacking read the whole file, its pages stay
    e = Engine(carried_default)
    after = _resident(path)  # the engine's load released its own mapping's pages, and only those:
    assert kept > 0.25 * size and after - kept < 0.05 * size, (kept, after, size)
    assert after >= 0.9 * kept, (kept, after)  # an older session's mapping (its range may be freed) is left alone
    ids = list(range(100, 140))
    first = e.prefill(ids)
    e.reset()
    assert (e.prefill(ids) == first).all() and release_file_pages(path) > 0  # pages fault back unchanged
    del raw


def _random_steps(step, path, vocab: int, n: int) -> tuple[list, list[int]]:
    """n one-token steps of random ids; (logits per step, resident bytes of `path` after each)."""
    rng = np.random.default_rng(1)
    logits, resident = [], []
    for _ in range(n):
        logits.append(step(int(rng.integers(0, vocab))).copy())
        resident.append(_resident(path))
    return logits, resident


@linux
def test_pages_a_running_model_mapped_go_back_every_few_tokens_and_logits_stay(carried_default, monkeypatch):
    """Every RELEASE_EVERY tokens the engine's mapping holds no resident page (each embedding lookup
    maps a whole page-cache folio, so a chat would hold the whole table), and what faults back gives
    the same logits as a run that never releases."""
    path = (carried_default / WEIGHTS_FILE).resolve()
    e = Engine(carried_default)
    e.prefill([1, 2, 3])
    ours, resident = _random_steps(lambda t: e.step([t])[0], path, e.vocab_size, 2 * RELEASE_EVERY)
    first = RELEASE_EVERY - 3 - 1  # the prefill fed 3: the 29th step reaches 32 tokens
    assert [i for i, r in enumerate(resident) if r == 0] == [first, first + RELEASE_EVERY], resident
    monkeypatch.setattr(memory, "RELEASE_EVERY", 10**9)
    kept = Engine(carried_default)
    kept.prefill([1, 2, 3])
    theirs, held = _random_steps(lambda t: kept.step([t])[0], path, e.vocab_size, 2 * RELEASE_EVERY)
    assert min(held) > 0 and all((a == b).all() for a, b in zip(ours, theirs))


@need_native
@linux
def test_native_releases_pages_every_few_tokens(carried_default):
    from native import Model

    path = (carried_default / WEIGHTS_FILE).resolve()
    m = Model(carried_default)
    m.feed([1, 2, 3])
    try:
        ours, resident = _random_steps(lambda t: m.feed([t]), path, 49152, 2 * RELEASE_EVERY)
    finally:
        m.close()
    first = RELEASE_EVERY - 3 - 1
    assert [i for i, r in enumerate(resident) if r == 0] == [first, first + RELEASE_EVERY], resident
    e = Engine(carried_default)  # the same logits as Python's engine (which the test above ties to no release)
    e.prefill([1, 2, 3])
    theirs, _ = _random_steps(lambda t: e.step([t])[0], path, e.vocab_size, 2 * RELEASE_EVERY)
    assert max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs)) < 1e-4


@need_native
@linux
def test_native_load_releases_only_its_own_mapping(carried_default):
    """libedgecpm (loaded into this process) gives back its own session's pages of the weights file and
    leaves an older session's mapping alone, as the Python engine does."""
    import onnxruntime as ort
    from native import Model

    from edgecpm.contract import MODEL_FILE

    path = (carried_default / WEIGHTS_FILE).resolve()
    size = path.stat().st_size
    raw = ort.InferenceSession(str(carried_default / MODEL_FILE), providers=["CPUExecutionProvider"])
    kept = _resident(path)
    m = Model(carried_default)
    after = _resident(path)
    m.close()
    del raw
    assert kept > 0.25 * size and after - kept < 0.05 * size and after >= 0.9 * kept, (kept, after, size)


@need_native
@linux
def test_native_engine_maps_the_weights_itself(carried_default):
    """libedgecpm hands onnxruntime its own whole-file mapping (the only new mapping of the file)."""
    from native import Model

    path = (carried_default / WEIGHTS_FILE).resolve()
    before = set(_mappings(path))
    m = Model(carried_default)
    new = [x for x in _mappings(path) if x not in before]
    m.close()
    assert len(new) == 1 and new[0][2] == 0 and new[0][1] - new[0][0] >= path.stat().st_size, new
    assert not [x for x in _mappings(path) if x not in before]  # unmapped with the model
