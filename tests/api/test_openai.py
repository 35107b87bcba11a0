"""The official openai SDK against a real server: models, chat (streaming and not), documents, errors."""

from __future__ import annotations

import openai
import pytest

from tests.api.conftest import KEYS, Server, notes_text, upload_ready


@pytest.fixture(scope="module")
def sdk(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEYS["alice"], max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def model_id(sdk: openai.OpenAI) -> str:
    models = sdk.models.list().data
    assert len(models) == 1 and models[0].owned_by == "strata"
    return models[0].id


def test_models_names_the_checkpoint(model_id: str, server: Server) -> None:
    assert model_id == server.model.name


def test_chat_without_documents(sdk: openai.OpenAI, model_id: str) -> None:
    out = sdk.chat.completions.create(model=model_id, max_tokens=8, temperature=0,
                                      messages=[{"role": "user", "content": "Say hello."}])
    assert out.object == "chat.completion"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].finish_reason in ("stop", "length")
    assert 0 < out.usage.completion_tokens <= 8
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert out.usage.prompt_tokens_details.cached_tokens == 0  # shorter than one KV page


def test_chat_over_a_document_reuses_its_cached_prefix(server: Server, sdk: openai.OpenAI,
                                                       model_id: str) -> None:
    with server.client("alice") as http:
        doc = upload_ready(http, [("ledger.txt", notes_text("ledger").encode())])
    assert doc["tokens"] > 3 * 64
    ask = dict(model=model_id, max_tokens=12, temperature=0, extra_body={"documents": [doc["id"]]},
               messages=[{"role": "system", "content": "Answer briefly."},
                         {"role": "user", "content": "Which bucket holds record 14?"}])
    first = sdk.chat.completions.create(**ask)
    # The document's material comes first: the prompt is the document plus the chat turns.
    assert first.usage.prompt_tokens > doc["tokens"]
    second = sdk.chat.completions.create(**ask)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= doc["tokens"] // 64 * 64 - 64, (cached, doc["tokens"])
    assert cached < second.usage.prompt_tokens
    # Greedy decoding over a restored prefix gives the same answer as the cold run.
    assert second.choices[0].message.content == first.choices[0].message.content

    chunks = list(sdk.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == first.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [first.choices[0].finish_reason]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == first.usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_streaming_without_usage_has_no_usage_chunk(sdk: openai.OpenAI, model_id: str) -> None:
    chunks = list(sdk.chat.completions.create(model=model_id, max_tokens=4, temperature=0, stream=True,
                                              messages=[{"role": "user", "content": "Count."}]))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_sdk_errors(server: Server, sdk: openai.OpenAI, model_id: str) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as e:
        sdk.chat.completions.create(model="gpt-nonexistent", messages=msgs)
    assert e.value.body["type"] == "not_found"
    with pytest.raises(openai.BadRequestError, match="max_tokens_per_request"):
        sdk.chat.completions.create(model=model_id, messages=msgs, max_tokens=100_000)
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model=model_id, messages=msgs, extra_body={"documents": ["doc_" + "0" * 24]})
    with pytest.raises(openai.BadRequestError, match="role"):
        sdk.chat.completions.create(model=model_id, messages=[{"role": "wizard", "content": "x"}])
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-wrong-key-0000000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
