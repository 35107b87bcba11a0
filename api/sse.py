"""Server-sent events and OpenAI response shapes for the two generation routes."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from api.deps import Services
from api.generation import record
from api.schemas import usage_dict
from runtime import Completion
from strata.ask import AskResult
from strata.errors import StrataError

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _error_event(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, StrataError):
        return {"error": {"type": exc.type, "message": exc.message}}
    return {"error": {"type": "internal_error", "message": "internal server error"}}


async def ask_events(services: Services, events: AsyncGenerator[Any, None]) -> AsyncIterator[str]:
    """{"type": "delta", "text"} per delta, then {"type": "done", answer, citations, usage, timings}."""
    try:
        async for item in events:
            if isinstance(item, str):
                yield sse({"type": "delta", "text": item})
            elif isinstance(item, AskResult):
                record(services, item)
                yield sse({"type": "done", **item.to_dict()})
    except Exception as exc:  # the status line is gone: the error travels as the last event
        yield sse({"type": "error", **_error_event(exc)})
    finally:
        await events.aclose()


class ChatIds:
    """The id, creation time and model name shared by every chunk of one completion."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.model = model

    def head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": None}


def completion_body(ids: ChatIds, done: Completion) -> dict[str, Any]:
    """A whole chat.completion object."""
    choice = {"index": 0, "message": {"role": "assistant", "content": done.text},
              "finish_reason": done.finish_reason, "logprobs": None}
    return {**ids.head("chat.completion"), "choices": [choice],
            "usage": usage_dict(done.prompt_tokens, done.cached_tokens, done.completion_tokens)}


def _chunk(ids: ChatIds, delta: dict[str, Any], finish: str | None, with_usage: bool) -> dict[str, Any]:
    out = {**ids.head("chat.completion.chunk"),
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
    if with_usage:
        out["usage"] = None
    return out


async def chat_events(services: Services, events: AsyncGenerator[Any, None], ids: ChatIds,
                      include_usage: bool) -> AsyncIterator[str]:
    """OpenAI chat.completion.chunk events, the usage chunk when asked for, then [DONE]."""
    try:
        yield sse(_chunk(ids, {"role": "assistant", "content": ""}, None, include_usage))
        async for item in events:
            if isinstance(item, str):
                yield sse(_chunk(ids, {"content": item}, None, include_usage))
            elif isinstance(item, Completion):
                record(services, item)
                yield sse(_chunk(ids, {}, item.finish_reason, include_usage))
                if include_usage:
                    usage = usage_dict(item.prompt_tokens, item.cached_tokens, item.completion_tokens)
                    yield sse({**ids.head("chat.completion.chunk"), "choices": [], "usage": usage})
    except Exception as exc:
        yield sse(_error_event(exc))
    finally:
        await events.aclose()
    yield "data: [DONE]\n\n"
