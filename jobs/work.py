"""Answering one document's questions in a row, so they all reuse its cached prefix.

The document's prompt is built once; each question is appended after it, so the engine prefills
the material once per document per job and the other questions hit the prefix cache. A result is
written once per (job, document, question); one already written is never asked again.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.spec import DocumentRef, JobSpec
from jobs.store import JobStore
from strata.errors import ConfigError, StrataError
from strata.settings import get_settings

Progress = Callable[[int, int], None]


class Transient(Exception):
    """A failure worth retrying (I/O, a store, anything not a Strata bad-input error)."""


def is_permanent(exc: BaseException) -> bool:
    """Bad input fails its own item at once; everything else is retried first."""
    return isinstance(exc, StrataError) and exc.status < 500


@dataclass(slots=True)
class Model:
    engine: Any  # runtime.Engine
    target: Any  # ingest.Target


_MODEL: Model | None = None


def worker_model() -> Model:
    """The process's engine (one per worker process: an engine runs one generation at a time)."""
    global _MODEL
    if _MODEL is None:
        from ingest import Target
        from runtime import Engine

        settings = get_settings()
        if settings.model is None:
            raise ConfigError("the worker has no model: start it with --model DIR or STRATA_MODEL")
        engine = Engine.from_pretrained(settings.model, weights=settings.weights)
        _MODEL = Model(engine, Target.from_model_dir(Path(settings.model)))
    return _MODEL


def document_prompt(spec: JobSpec, ref: DocumentRef, model: Model) -> Any:
    """The material of one document, packed into what the context leaves for question and answer."""
    from strata.cli.ask import material_budget

    settings = get_settings()
    context = model.engine.config.max_position_embeddings
    if ref.source is not None:
        from ingest import build_prompt

        budget = material_budget(context, spec.max_new_tokens, spec.budget)
        return build_prompt([ref.source], model.target, budget)
    from strata.documents import DocumentStore

    # The API's budget for documents, so a job and the API's asks pack (and cache) the same prompt.
    budget = material_budget(context, max(settings.max_tokens_per_request, spec.max_new_tokens), spec.budget)
    assert ref.document_id is not None
    home = settings.home
    docs = DocumentStore(home / "uploads", extract_cache=home / "extracts")
    return docs.prompt(spec.tenant, ref.document_id, model.target, budget)


def _record(spec: JobSpec, doc: int, q: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"document": doc, "question": q, "source": spec.documents[doc].name,
            "question_text": spec.questions[q], "worker": f"{socket.gethostname()}:{os.getpid()}",
            "finished_at": time.time(), **body}


def _error(exc: BaseException, final: bool) -> dict[str, Any]:
    if isinstance(exc, StrataError):
        return {"error": {"type": exc.type, "message": exc.message}}
    note = " (after the last retry)" if final else ""
    return {"error": {"type": "transient_error", "message": f"{type(exc).__name__}: {exc}{note}"}}


def _fail(store: JobStore, job_id: str, spec: JobSpec, doc: int, pending: list[int],
          error: dict[str, Any]) -> int:
    return sum(store.put_item(job_id, doc, q, _record(spec, doc, q, error)) for q in pending)


def fail_pending(store: JobStore, job_id: str, doc: int, error: dict[str, Any]) -> int:
    """Give every unanswered question of `doc` this error; returns how many results were written."""
    spec = store.spec(job_id)
    pending = [q for q in range(len(spec.questions)) if not store.has_item(job_id, doc, q)]
    return _fail(store, job_id, spec, doc, pending, error)


def worker_lost(crashes: int) -> dict[str, Any]:
    return {"error": {"type": "worker_lost", "message": f"the worker process died {crashes} times while "
                      "answering this document (an input that crashes it?); its other questions were not asked"}}


def answer_document(store: JobStore, job_id: str, doc: int, final: bool, progress: Progress) -> int:
    """Answer every question of `doc` not yet answered; returns how many results this call wrote.

    A permanent error fails its own item (or, while building the prompt, the document's items);
    any other error raises Transient unless this is the `final` attempt, which records it instead.
    """
    from runtime import SamplingParams
    from strata.ask import ask

    spec = store.spec(job_id)
    pending = [q for q in range(len(spec.questions)) if not store.has_item(job_id, doc, q)]
    total, written = len(spec.questions), 0
    if not pending:
        return 0
    try:
        model = worker_model()
    except Exception as exc:  # the worker's fault, never the input's: retried until the last attempt
        if not final:
            raise Transient(f"the worker could not load its model: {exc}") from exc
        error = {"error": {"type": "model_unavailable", "message": f"the worker could not load its model "
                           f"(after the last retry): {getattr(exc, 'message', None) or exc}"}}
        return _fail(store, job_id, spec, doc, pending, error)
    try:
        prompt = document_prompt(spec, spec.documents[doc], model)
    except Exception as exc:
        if not (is_permanent(exc) or final):
            raise Transient(str(exc)) from exc
        return _fail(store, job_id, spec, doc, pending, _error(exc, final))
    params = SamplingParams(max_new_tokens=spec.max_new_tokens, temperature=spec.temperature)
    for n, q in enumerate(pending, start=total - len(pending) + 1):
        if store.cancelled(job_id):
            break
        try:
            body = ask(model.engine, prompt, spec.questions[q], params, spec.max_citations,
                       tenant=spec.tenant).to_dict()
        except Exception as exc:
            if not (is_permanent(exc) or final):
                raise Transient(str(exc)) from exc
            body = _error(exc, final)
        written += store.put_item(job_id, doc, q, _record(spec, doc, q, body))
        progress(n, total)
    return written
