"""OpenAI-compatible /v1/chat/completions and /v1/models (documents via the `documents` field)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import ServicesDep, TenantDep
from api.generation import chat_job, record, start
from api.schemas import ChatBody
from api.sse import SSE_HEADERS, ChatIds, chat_events, completion_body
from runtime import Completion
from strata.errors import NotFound

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models")
def models(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": services.model_id, "object": "model", "created": 0,
                                        "owned_by": "strata"}]}


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatBody, services: ServicesDep,
                           tenant: TenantDep) -> StreamingResponse | dict[str, Any]:
    """Chat; attached documents' material goes first, then the role-tagged messages."""
    if body.model != services.model_id:
        raise NotFound(f"model {body.model!r} does not exist; this server serves {services.model_id!r}")
    ids = ChatIds(services.model_id)
    events = await start(services, chat_job(services, tenant, body))
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(chat_events(services, events, ids, include_usage),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    done = None
    try:
        async for item in events:
            if isinstance(item, Completion):
                done = item
    finally:
        await events.aclose()
    assert done is not None
    record(services, done)
    return completion_body(ids, done)
