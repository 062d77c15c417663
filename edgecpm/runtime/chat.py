"""A chat session that keeps the model state across turns and prefills only what is new.

Each turn renders the whole conversation with the chat template, finds the longest prefix the state
already holds, rolls back to it (KV: by position; recurrent state: from a snapshot), and prefills
the rest. Outputs therefore equal a fresh run over the whole conversation.

Exactness: the state is reused only up to the end of the last prefill (`exact_pos`), and at least two
tokens are always fed. Tokens the model generated were computed one row at a time, on a kernel path
whose rounding differs from a prefill's (GroupQueryAttention's one-row path, grown by MatMulNBits' int8
activations; see Engine.prefill). With `reuse_generated=False` (the server's choice) they are prefilled
again with the next turn: then the same conversation gives the same logits, token for token, whether its
prefix came from the cache or not. The default keeps them (interactive chat: the next turn starts at
once; its output is within kernel rounding of a fresh run, exactly equal on fp32 artifacts).
"""

from __future__ import annotations

from collections.abc import Iterator

from edgecpm.contract import UserError
from edgecpm.runtime.engine import Engine
from edgecpm.runtime.generate import GenerationResponse, stream_tokens
from edgecpm.runtime.state import Snapshot, common_prefix
from edgecpm.runtime.tokenizer import Tokenizer

MAX_SNAPSHOTS = 8


class ContextOverflow(UserError):
    def __init__(self, tokens: int, ctx: int):
        self.tokens, self.ctx = tokens, ctx
        super().__init__(f"the conversation ({tokens} tokens) exceeds the local context of {ctx}; "
                         "start a new chat (/reset) or load with a larger --context")


class ChatSession:
    def __init__(self, engine: Engine, tokenizer: Tokenizer, system: str | None = None,
                 reuse_generated: bool = True):
        self.engine, self.tokenizer, self.system = engine, tokenizer, system
        self.reuse_generated = reuse_generated
        self.exact_pos = 0  # the state's first exact_pos tokens were prefilled, never decoded
        self.messages: list[dict] = []
        self.snapshots: list[Snapshot] = []
        self.last_prefill = 0  # tokens prefilled for the last turn
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.snapshots = []
        self.exact_pos = 0
        self.engine.reset()

    def snapshot(self) -> tuple[Snapshot, list[dict], int]:
        """O(1) in context length: the fixed-size state tensors, the position and the messages."""
        return self.engine.state.snapshot(), [dict(m) for m in self.messages], self.exact_pos

    def restore(self, snap: tuple[Snapshot, list[dict], int]) -> None:
        self.engine.state.restore(snap[0])
        self.messages, self.exact_pos = [dict(m) for m in snap[1]], snap[2]

    def _reuse(self, ids: list[int]) -> int:
        """Roll the state back to the longest usable prefix of `ids`; return its length."""
        state = self.engine.state
        keep = min(common_prefix(state.tokens, ids), max(len(ids) - 2, 0))  # >= 2 rows to feed (see above)
        if not self.reuse_generated:
            keep = min(keep, self.exact_pos)
        if state.truncate(keep):
            return keep
        for snap in reversed(self.snapshots):
            if snap.pos <= keep and list(snap.tokens) == ids[: snap.pos]:
                state.restore(snap)
                return snap.pos
        self.engine.reset()
        return 0

    def _remember(self) -> None:
        self.exact_pos = self.engine.state.pos
        if self.engine.state.recurrent:
            self.snapshots = (self.snapshots + [self.engine.state.snapshot()])[-MAX_SNAPSHOTS:]

    def send(self, content: str, role: str = "user", **gen) -> Iterator[GenerationResponse]:
        """Add a message and stream the assistant's answer (recorded in the history at the end)."""
        return self.respond(self.messages + [{"role": role, "content": content}], **gen)

    def respond(self, messages: list[dict], **gen) -> Iterator[GenerationResponse]:
        """Stream the assistant's answer to a whole conversation (e.g. an API request, or turns the
        cloud answered): the state catches up from the longest prefix it already holds."""
        self.messages = [dict(m) for m in messages]
        ids = self.tokenizer.encode_chat(self.messages)
        if len(ids) > self.engine.ctx:
            raise ContextOverflow(len(ids), self.engine.ctx)
        start = self._reuse(ids)
        self.last_prefill = len(ids) - start
        text = []
        for r in stream_tokens(self.engine, self.tokenizer, ids[start:], on_prefill=self._remember, **gen):
            text.append(r.text)
            yield r
        self.messages.append({"role": "assistant", "content": "".join(text)})

    def ask(self, content: str, **gen) -> str:
        return "".join(r.text for r in self.send(content, **gen))
