"""Model state: buffers allocated once from the manifest's state specs, bound to the session.

kv        one buffer [1, kv_heads, ctx, hd] bound as both past and present (GroupQueryAttention
          writes the new rows in place), so a decode step copies no cache.
conv /    two fixed-size buffers per tensor, swapped after each step (input <- last output).
recurrent
A snapshot is a copy of the fixed-size tensors plus the position: KV rows past the position are
simply overwritten later, so restoring never touches the KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from edgecpm.contract import StateSpec


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass(frozen=True)
class Snapshot:
    pos: int
    tokens: tuple[int, ...]
    fixed: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.fixed.values())


class State:
    """Per-layer state buffers for one sequence, plus the tokens they hold."""

    def __init__(self, specs: list[StateSpec], ctx: int):
        self.ctx = ctx
        self.kv: list[tuple[StateSpec, np.ndarray, ort.OrtValue]] = []
        self.fixed: list[tuple[StateSpec, list[np.ndarray], list[ort.OrtValue]]] = []
        for s in specs:
            if s.kind == "kv":
                a = np.zeros(s.dims(ctx), s.dtype)  # [1, kv_heads, ctx, hd]
                self.kv.append((s, a, ort.OrtValue.ortvalue_from_numpy(a)))
            else:
                pair = [np.zeros(s.dims(ctx), s.dtype) for _ in range(2)]  # fixed shape, ping-pong
                self.fixed.append((s, pair, [ort.OrtValue.ortvalue_from_numpy(a) for a in pair]))
        self.flip = 0  # index of the buffer that holds the current fixed state
        self.tokens: list[int] = []
        self.step_start: int | None = None  # position before the last step, while its input buffer is intact

    @property
    def pos(self) -> int:
        return len(self.tokens)

    @property
    def recurrent(self) -> bool:
        """True when some state cannot be rolled back by position alone."""
        return bool(self.fixed)

    def bind_kv(self, io: ort.IOBinding) -> None:
        """KV buffers never move: bind them once."""
        for s, _, v in self.kv:
            io.bind_ortvalue_input(s.input, v)
            io.bind_ortvalue_output(s.output, v)

    def bind_fixed(self, io: ort.IOBinding) -> None:
        """Read from the current buffer, write into the other one."""
        for s, _, vals in self.fixed:
            io.bind_ortvalue_input(s.input, vals[self.flip])
            io.bind_ortvalue_output(s.output, vals[1 - self.flip])

    def advance(self, tokens) -> None:
        self.step_start = self.pos
        self.tokens.extend(int(t) for t in tokens)
        if self.fixed:
            self.flip = 1 - self.flip

    def rewind(self, n: int) -> int:
        """Roll back towards the first n tokens without a snapshot; return the position reached (<= n).
        KV rows roll back by position. Fixed-size state can go back only to where the last step began:
        that step read its input buffer and wrote the other one, so the old state is still there
        (speculative decoding's rollback, free of copies). The caller re-feeds tokens[result:n]."""
        if n > self.pos:
            raise ValueError(f"cannot rewind forward ({self.pos} -> {n})")
        if self.truncate(n):
            return n
        if self.step_start is None or self.step_start > n:
            raise ValueError(f"cannot rewind to {n}: the last step began at {self.step_start}; use a snapshot")
        start, self.flip, self.step_start = self.step_start, 1 - self.flip, None
        del self.tokens[start:]
        return start

    def reset(self) -> None:
        self.step_start = None
        self.tokens = []
        for _, pair, _ in self.fixed:
            pair[self.flip][...] = 0

    def truncate(self, n: int) -> bool:
        """Roll back to the first n tokens; possible without a snapshot only for pure-KV models."""
        if n == self.pos:
            return True
        if n == 0:
            self.reset()
            return True
        if self.fixed:
            return False
        del self.tokens[n:]
        return True

    def snapshot(self) -> Snapshot:
        return Snapshot(self.pos, tuple(self.tokens), {s.input: pair[self.flip].copy() for s, pair, _ in self.fixed})

    def restore(self, snap: Snapshot) -> None:
        self.step_start = None
        for s, pair, _ in self.fixed:
            pair[self.flip][...] = snap.fixed[s.input]
        self.tokens = list(snap.tokens)

    def arrays(self) -> dict[str, np.ndarray]:
        """Current state tensors by input name (KV trimmed to the position), for tests and debugging."""
        out = {s.input: a[:, :, : self.pos] for s, a, _ in self.kv}
        out.update({s.input: pair[self.flip] for s, pair, _ in self.fixed})
        return out
