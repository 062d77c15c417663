"""The OpenAI wire format as pydantic models: what /v1/chat/completions and /v1/completions accept and
what they answer, plus the error body every failure uses.

Requests are validated by FastAPI against these models, so a bad field is answered by the library (as
HTTP 400 in OpenAI's error shape, see openai_api). Types are strict where pydantic would coerce: "5" is
not an integer, "false" is not a boolean, 1 is not a string. The sampling ranges are the CLI's:
temperature >= 0, top_p in (0, 1], min_p in [0, 1], top_k >= 0, repetition_penalty > 0, seed >= 0.
`max_tokens` (or `max_completion_tokens`) must be at least 1; absent, it is 256. `n` must be 1 (one
answer per request). Unknown fields are ignored, as OpenAI-compatible servers commonly do.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator
from starlette.responses import JSONResponse

DEFAULT_MAX_TOKENS = 256

Real = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # a JSON number: int or float, never "0.5"


class TextPart(BaseModel):
    """One content part; only text parts exist for a text model."""

    type: Literal["text"]
    text: StrictStr


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart] | None = None  # None: e.g. an assistant turn that called a tool

    def as_dict(self) -> dict:
        """The message as the chat template takes it: text parts joined, `developer` read as `system`."""
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class Sampling(BaseModel):
    """Fields shared by both endpoints. None means "the default" (some clients send explicit nulls)."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: Annotated[Real, Field(ge=0)] | None = None
    top_p: Annotated[Real, Field(gt=0, le=1)] | None = None
    top_k: Annotated[StrictInt, Field(ge=0)] | None = None
    min_p: Annotated[Real, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[Real, Field(gt=0)] | None = None
    seed: Annotated[StrictInt, Field(ge=0)] | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=16)] | None = None
    stream: StrictBool | None = None
    n: StrictInt | None = None

    @field_validator("n")
    @classmethod
    def _one_answer(cls, n: int | None) -> int | None:
        if n is not None and n != 1:
            raise ValueError("only n = 1 is supported (one answer per request)")
        return n

    def limit(self) -> int:
        return self.max_tokens or DEFAULT_MAX_TOKENS

    def gen_kwargs(self) -> dict:
        """Keyword arguments for Router.respond / Router.complete."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return dict(max_tokens=self.limit(), temp=_or(self.temperature, 0.0), top_p=_or(self.top_p, 1.0),
                    top_k=_or(self.top_k, 0), min_p=_or(self.min_p, 0.0),
                    repetition_penalty=_or(self.repetition_penalty, 1.0), seed=self.seed, stop=stop)


def _or(value, default):
    return default if value is None else value


class ChatRequest(Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None  # the newer name; it wins

    def limit(self) -> int:
        return self.max_completion_tokens or super().limit()


class CompletionRequest(Sampling):
    prompt: Annotated[StrictStr, Field(min_length=1)] | Annotated[list[StrictStr], Field(min_length=1, max_length=1)]

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, prompt):
        if isinstance(prompt, list) and not prompt[0]:
            raise ValueError("the prompt must not be empty")
        return prompt


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Provenance(BaseModel):
    """Where the answer came from (edgecpm's addition): "local" or "cloud", and why."""

    source: str
    reason: str | None = None
    drafted: int | None = None  # speculative decoding (serve --draft...): tokens drafted and accepted
    accepted: int | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    edgecpm: Provenance


class ChunkChoice(BaseModel):
    index: int = 0
    delta: dict[str, str]  # {"role": "assistant"} first, then {"content": ...}, {} at the end
    finish_reason: str | None = None


class ChatChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None  # on the last chunk
    edgecpm: Provenance | None = None


class TextChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None


class Completion(BaseModel):
    """A whole /v1/completions answer, or one streamed chunk of it (OpenAI uses one shape for both)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None
    edgecpm: Provenance | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "edgecpm"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """Raised anywhere in a request; answered as `status` with OpenAI's error JSON."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.detail, self.headers = status, ErrorDetail(message=message, type=type, param=param,
                                                                     code=code), headers

    def response(self) -> JSONResponse:
        return JSONResponse(ErrorBody(error=self.detail).model_dump(), status_code=self.status, headers=self.headers)


def error_response(status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    """OpenAI's error JSON: {"error": {"message", "type", "param", "code"}}."""
    return ApiError(status, message, type, param, code, headers).response()
