"""Submit, inspect, fetch and cancel jobs: the plain functions the API and the CLI both call."""

from __future__ import annotations

from typing import Any

from jobs.app import get_app
from jobs.spec import JobSpec
from jobs.store import JobStore
from jobs.tasks import enqueue, task_id
from strata.errors import NotFound
from strata.settings import Settings, get_settings

MAX_TASKS_SHOWN = 1_000  # a status lists at most this many document tasks (one backend read each)


def _store(settings: Settings | None) -> JobStore:
    return JobStore((settings or get_settings()).home / "jobs")


def submit(spec: JobSpec, settings: Settings | None = None) -> str:
    """Persist the job, then enqueue one task per document; returns the job id."""
    app, store = get_app(settings), _store(settings)
    _check_documents(spec, settings or get_settings())
    job_id = store.create(spec)
    for doc in range(len(spec.documents)):
        enqueue(app, job_id, doc)
    return job_id


def _check_documents(spec: JobSpec, settings: Settings) -> None:
    """Refuse an unknown document id now rather than fail its items later."""
    ids = [ref.document_id for ref in spec.documents if ref.document_id is not None]
    if ids:
        from strata.documents import DocumentStore

        docs = DocumentStore(settings.home / "uploads")
        for doc_id in ids:
            docs.get(spec.tenant, doc_id)


def _owned(store: JobStore, job_id: str, tenant: str | None) -> JobSpec:
    spec = store.spec(job_id)
    if tenant is not None and spec.tenant != tenant:
        raise NotFound(f"no job '{job_id}'")  # another tenant's job does not exist for this one
    return spec


def status(job_id: str, tenant: str | None = None, settings: Settings | None = None,
           tasks: bool = True) -> dict[str, Any]:
    """The job's state and progress (done/total from stored results), with each document task's state."""
    store = _store(settings)
    spec = _owned(store, job_id, tenant)
    body = store.status(job_id)
    if not tasks:
        return body
    app = get_app(settings)
    shown = []
    for doc in range(min(len(spec.documents), MAX_TASKS_SHOWN)):
        result = app.AsyncResult(task_id(job_id, doc))
        info = result.info  # read once: each access asks the backend again, and the task moves on
        info = info if isinstance(info, dict) else {}
        shown.append({"document": doc, "source": spec.documents[doc].name, "state": result.state,
                      "done": info.get("done"), "total": info.get("total")})
    body["tasks"] = shown
    return body


def results(job_id: str, tenant: str | None = None, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every stored result of the job, in (document, question) order."""
    store = _store(settings)
    _owned(store, job_id, tenant)
    return store.items(job_id)


def cancel(job_id: str, tenant: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Stop the job: queued documents are revoked, running ones stop after their current question.

    A finished job stays finished (cancelling it changes nothing)."""
    store = _store(settings)
    spec = _owned(store, job_id, tenant)
    if store.status(job_id)["state"] == "done":
        return store.status(job_id)
    store.cancel(job_id)
    app = get_app(settings)
    try:
        app.control.revoke([task_id(job_id, d) for d in range(len(spec.documents))])
    except Exception:  # best effort: the cancelled marker is what the tasks obey
        pass
    return store.status(job_id)


def results_markdown(items: list[dict[str, Any]]) -> str:
    """Results as Markdown: one section per document, one subsection per question."""
    out: list[str] = []
    source = None
    for item in items:
        if item["source"] != source:
            source = item["source"]
            out.append(f"## {source}\n")
        out.append(f"### {item['question_text']}\n")
        if item.get("error"):
            out.append(f"**Failed** ({item['error']['type']}): {item['error']['message']}\n")
            continue
        out.append(item["answer"].strip() + "\n")
        if item.get("citations"):
            out.append("Sources: " + "; ".join(c["label"] for c in item["citations"]) + "\n")
        usage = item.get("usage", {})
        out.append(f"_{usage.get('prompt_tokens')} prompt tokens, {usage.get('cached_tokens')} cached_\n")
    return "\n".join(out)
