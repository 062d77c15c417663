"""The runtime gives back the weights file's pages once onnxruntime has repacked the weights."""

import sys

import pytest
from native import need_native

from edgecpm.contract import WEIGHTS_FILE
from edgecpm.runtime import Engine
from edgecpm.runtime.memory import release_file_pages


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
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


@need_native
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
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
