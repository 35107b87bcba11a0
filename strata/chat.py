"""Chat over documents: the documents' material first, then the role-tagged messages.

The material leads so every conversation about the same documents shares its prefix (and its
cached KV pages) with every other question about them; the template is deliberately plain text,
which any base model continues sensibly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from ingest.prompt import MediaSpan, Prompt
from runtime import Engine
from strata.errors import BadRequest

ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}
TURN_TEMPLATE = "\n\n{role}: {content}"
ASSISTANT_CUE = "\n\nAssistant:"
MAX_MESSAGES = 512
MAX_CHAT_CHARS = 256_000


@dataclass(slots=True)
class ChatMessage:
    role: str
    content: str


def check_messages(messages: Sequence[ChatMessage]) -> None:
    """Refuse an empty conversation, unknown roles and oversized text before tokenising."""
    if not messages:
        raise BadRequest("messages must not be empty")
    if len(messages) > MAX_MESSAGES:
        raise BadRequest(f"at most {MAX_MESSAGES} messages per request")
    for m in messages:
        if m.role not in ROLES:
            raise BadRequest(f"unknown message role {m.role!r} (one of {', '.join(ROLES)})")
    if sum(len(m.content) for m in messages) > MAX_CHAT_CHARS:
        raise BadRequest(f"the messages are longer than {MAX_CHAT_CHARS} characters")


def render_messages(messages: Sequence[ChatMessage]) -> str:
    """The conversation as text, ending with the cue for the assistant's turn."""
    turns = "".join(TURN_TEMPLATE.format(role=ROLES[m.role], content=m.content) for m in messages)
    return turns + ASSISTANT_CUE


def join_material(prompts: Sequence[Prompt], bos: int | None) -> tuple[list[int], list[MediaSpan]]:
    """Several documents' material as one token stream (one BOS at the front) with media shifted."""
    ids: list[int] = []
    media: list[MediaSpan] = []
    for prompt in prompts:
        tokens = prompt.token_ids
        skip = 1 if ids and tokens and bos is not None and tokens[0] == bos else 0
        shift = len(ids) - skip
        ids.extend(tokens[skip:])
        media.extend(dataclasses.replace(m, start=m.start + shift) for m in prompt.media)
    return ids, media


def chat_ids(engine: Engine, prompts: Sequence[Prompt],
             messages: Sequence[ChatMessage]) -> tuple[list[int], list[MediaSpan]]:
    """Token ids and media for a conversation about `prompts` (possibly none)."""
    check_messages(messages)
    bos = engine.config.bos_token_id
    ids, media = join_material(prompts, bos)
    text = render_messages(messages)
    ids.extend(engine.encode(text, add_bos=not ids))
    return ids, media
