"""Generation jobs for the engine worker: asking about a document, and chat over documents.

A job runs on the engine thread. It builds (or fetches) the documents' prompts, starts the
generation, yields STARTED once the request has passed every check (so errors up to that point
become proper HTTP errors, not a broken stream), then text deltas, then the final result.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import suppress
from typing import Any

from api.deps import Services
from api.schemas import AskBody, ChatBody
from api.worker import Job, close_quietly
from runtime import Completion, Engine, SamplingParams
from strata.ask import AskResult, ask_stream
from strata.chat import chat_ids
from strata.errors import BadRequest, Overloaded

DEFAULT_CHAT_TOKENS = 256


class Started:
    """Marker: the request passed its checks and generation has begun."""


STARTED = Started()


def check_max_tokens(requested: int, services: Services) -> int:
    cap = services.settings.max_tokens_per_request
    if requested > cap:
        raise BadRequest(f"max_tokens {requested} is over this server's limit of {cap} "
                         f"(max_tokens_per_request)")
    return requested


def ask_job(services: Services, tenant: str, doc_id: str, body: AskBody) -> Job:
    """Answer body.question about one document, with citations."""
    params = SamplingParams(max_new_tokens=check_max_tokens(body.max_tokens, services),
                            temperature=body.temperature, seed=body.seed)

    def job(engine: Engine) -> Iterator[Any]:
        prompt = services.store.prompt(tenant, doc_id, services.target, services.budget)
        stream = ask_stream(engine, prompt, body.question, params, body.citations, tenant)
        yield STARTED
        deltas = iter(stream)
        try:
            yield from deltas
        finally:
            close_quietly(deltas)
        yield stream.result

    return job


def chat_job(services: Services, tenant: str, body: ChatBody) -> Job:
    """Continue a conversation; the attached documents' material goes first."""
    requested = body.requested_tokens()
    limit = services.settings.max_tokens_per_request
    max_new = check_max_tokens(requested, services) if requested else min(DEFAULT_CHAT_TOKENS, limit)
    params = SamplingParams(max_new_tokens=max_new, temperature=body.temperature, top_p=body.top_p,
                            seed=body.seed, stop=body.stops())
    messages = [m.plain() for m in body.messages]
    for doc_id in body.documents:  # fail fast, before queueing, on an unknown id
        services.store.get(tenant, doc_id)
    share = services.budget // max(1, len(body.documents))

    def job(engine: Engine) -> Iterator[Any]:
        prompts = [services.store.prompt(tenant, d, services.target, share) for d in body.documents]
        ids, media = chat_ids(engine, prompts, messages)
        generation = engine.stream(ids, params, media, tenant=tenant)
        yield STARTED
        events = iter(generation)
        try:
            for event in events:
                if event.text:
                    yield event.text
        finally:
            close_quietly(events)
        yield generation.result

    return job


async def start(services: Services, job: Job) -> AsyncGenerator[Any, None]:
    """Queue `job` and wait until it has started; raises (429, 4xx) before any byte is sent."""
    events = services.worker.events(job)
    try:
        first = await anext(events)
    except Overloaded:
        services.metrics.rejected.inc()
        raise
    except BaseException:
        with suppress(Exception):
            await events.aclose()
        raise
    assert first is STARTED
    return events


def record(services: Services, result: AskResult | Completion) -> None:
    """Feed one finished generation into the metrics."""
    services.metrics.generation(result.prompt_tokens, result.cached_tokens, result.completion_tokens,
                                result.ttft_s, result.decode_tokens_per_s)
