"""Request bodies (pydantic at the edge). OpenAI's chat body allows fields we ignore."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from strata.chat import ChatMessage
from strata.errors import BadRequest


class AskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    max_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int | None = None
    stream: bool = False
    citations: int = Field(default=5, ge=0, le=50)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None

    def plain(self) -> ChatMessage:
        """The message as text; only text parts are understood in a chat body."""
        if self.content is None or isinstance(self.content, str):
            return ChatMessage(self.role, self.content or "")
        texts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise BadRequest(f"content part type {part.type!r} is not supported; attach media "
                                 f"as documents (POST /v1/documents) and pass their ids in 'documents'")
            texts.append(part.text)
        return ChatMessage(self.role, "\n".join(texts))


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Message]
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    documents: list[str] = Field(default_factory=list, max_length=16)

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if len(stops) > 4:
            raise BadRequest("at most 4 stop sequences")
        return stops

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def usage_dict(prompt: int, cached: int, completion: int) -> dict[str, Any]:
    """OpenAI's usage object, with prompt_tokens_details.cached_tokens filled in."""
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}
