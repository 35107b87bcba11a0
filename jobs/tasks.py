"""The Celery side: the per-document task, with its lease, retries and crash count.

One task per (job, document) loops over the document's questions (prefix reuse). Its task id is
"<job>-<doc>", so a cancel can revoke it by name. Recovery has three layers: acks_late with
reject_on_worker_lost requeues a task whose pool process died; Redis redelivers an unacked message
after the visibility timeout; and every worker's sweeper (jobs.sweeper) enqueues again documents
whose lease went stale or whose message vanished. Duplicates are harmless: results are written
once per (job, doc, question).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task
from celery.signals import task_received

from jobs.store import JobStore
from jobs.work import Transient, answer_document, fail_pending, worker_lost
from strata.errors import NotFound
from strata.settings import get_settings

log = logging.getLogger("strata.jobs")
RUN_DOCUMENT = "strata.jobs.run_document"


def task_id(job_id: str, doc: int) -> str:
    return f"{job_id}-{doc}"


def job_store() -> JobStore:
    return JobStore(get_settings().home / "jobs")


def backoff(retries: int) -> float:
    s = get_settings()
    return min(s.jobs_retry_backoff_s * (2 ** retries), s.jobs_retry_backoff_max_s)


def enqueue(app: Celery, job_id: str, doc: int) -> None:
    """Send one document's task by name (the worker resolves it; the sender imports nothing)."""
    app.send_task(RUN_DOCUMENT, args=[job_id, doc], task_id=task_id(job_id, doc))


def run_document(self: Task, job_id: str, doc: int) -> dict[str, Any]:
    """Answer every question of one document of one job, then mark it done."""
    store, settings = job_store(), get_settings()
    try:
        if store.cancelled(job_id) or store.document_done(job_id, doc):
            return {"job": job_id, "document": doc, "skipped": "cancelled or done"}
    except NotFound:
        return {"job": job_id, "document": doc, "skipped": "no such job"}
    leases = store.leases(job_id, settings.jobs_lease_s)
    if not leases.claim(doc, self.request.id):
        return {"job": job_id, "document": doc, "skipped": "another worker holds this document"}
    final = self.request.retries >= settings.jobs_max_retries

    def progress(done: int, total: int) -> None:
        self.update_state(state="PROGRESS", meta={"job": job_id, "document": doc, "done": done, "total": total})

    crashes = store.begin_attempt(job_id, doc)
    try:
        if crashes >= settings.jobs_max_crashes:  # a poison input that kills its process: stop retrying it
            log.warning("job %s document %d: its process died %d times; failing the rest", job_id, doc, crashes)
            written = fail_pending(store, job_id, doc, worker_lost(crashes))
        else:
            with leases.heartbeat(doc):
                written = answer_document(store, job_id, doc, final, progress)
    except Transient as exc:
        leases.mark_retrying(doc, self.request.id)
        log.warning("job %s document %d: transient error, retry %d: %s", job_id, doc,
                    self.request.retries + 1, exc)
        raise self.retry(exc=exc, countdown=backoff(self.request.retries), max_retries=None) from exc
    finally:
        store.end_attempt(job_id, doc)  # never reached when the process dies: that is the count
    if not store.cancelled(job_id):
        _finish_document(store, job_id, doc)
    leases.release(doc)
    total = len(store.spec(job_id).questions)
    done = sum(store.has_item(job_id, doc, q) for q in range(total))
    return {"job": job_id, "document": doc, "written": written, "done": done, "total": total}


def _finish_document(store: JobStore, job_id: str, doc: int) -> None:
    spec = store.spec(job_id)
    if all(store.has_item(job_id, doc, q) for q in range(len(spec.questions))):
        store.mark_document_done(job_id, doc)
    if store.documents_done(job_id) >= len(spec.documents):
        store.finish(job_id)


def register(app: Celery) -> None:
    from jobs import sweeper  # noqa: F401 - connects the sweeper to the worker's signals

    app.task(name=RUN_DOCUMENT, bind=True, acks_late=True, reject_on_worker_lost=True)(run_document)


# -- worker main process: note received tasks (the sweeper, jobs.sweeper, watches the leases) ------
@task_received.connect
def _on_received(request: Any = None, **_: Any) -> None:
    """The worker took the message: lease the document so its loss is noticed if this worker dies."""
    if request is None or request.name != RUN_DOCUMENT:
        return
    job_id, doc = request.args
    try:
        job_store().leases(job_id, get_settings().jobs_lease_s).reserve(int(doc), request.id)
    except (NotFound, OSError):
        pass
