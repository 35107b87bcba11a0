"""The sweeper: a thread in every worker's main process that finds documents whose work was lost.

Each pass over the active jobs enqueues again (by name, like any submission):
- a document not done whose lease is stale: its process died mid-way (a whole worker SIGKILLed;
  on the file broker its message is gone, on Redis it would come back only after the visibility
  timeout);
- on the file broker, a document not done with no lease and no message in the queue, seen so on
  two passes in a row: its message was taken by a worker that died before it could lease it.
Duplicates are harmless (results are written once), so several sweepers need no coordination
beyond the atomic rename that takes a stale lease.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from jobs.store import JobStore
from jobs.tasks import enqueue, job_store, task_id
from strata.errors import NotFound
from strata.settings import get_settings

log = logging.getLogger("strata.jobs")
PROCESSED_KEEP_S = 600.0  # file broker: taken messages are kept this long, then pruned


def queued_task_ids(app: Celery) -> set[str] | None:
    """Ids of the tasks waiting in the file broker's queue; None on Redis (it redelivers by itself)."""
    folder = app.conf.broker_transport_options.get("data_folder_in")
    if not folder or not str(app.conf.broker_url).startswith("filesystem"):
        return None
    suffix = f".{app.conf.task_default_queue}.msg"
    ids = set()
    for path in Path(folder).iterdir():
        if path.name.endswith(suffix):
            try:
                ids.add(json.loads(path.read_bytes())["headers"]["id"])
            except (OSError, ValueError, KeyError):
                continue  # taken meanwhile, or not a task message
    return ids


class Sweeper:
    """One worker's sweeper; `sweep` is one pass (the thread calls it every jobs_sweep_s)."""

    def __init__(self, app: Celery, store: JobStore) -> None:
        self.app, self.store = app, store
        self.unseen: set[tuple[str, int]] = set()  # no lease and not queued on the last pass

    def sweep(self) -> int:
        """Enqueue again every document whose work was lost; returns how many."""
        queued, sent = queued_task_ids(self.app), 0
        unseen: set[tuple[str, int]] = set()
        for job_id in self.store.active():
            try:
                for doc, reason in self._lost(job_id, queued, unseen):
                    log.warning("job %s document %d: %s; enqueuing it again", job_id, doc, reason)
                    enqueue(self.app, job_id, doc)
                    sent += 1
            except (NotFound, OSError) as exc:
                log.warning("sweep of job %s: %s", job_id, exc)
        self.unseen = unseen
        return sent

    def _lost(self, job_id: str, queued: set[str] | None, unseen: set[tuple[str, int]]) -> list[tuple[int, str]]:
        store = self.store
        spec = store.spec(job_id)
        if store.cancelled(job_id) or store.documents_done(job_id) >= len(spec.documents):
            store.finish(job_id)  # e.g. its last task died between marking done and finishing
            return []
        leases, lost = store.leases(job_id, get_settings().jobs_lease_s), []
        for doc in range(len(spec.documents)):
            if store.document_done(job_id, doc):
                continue
            if leases.take_stale(doc):
                lost.append((doc, "its worker is gone"))
            elif queued is not None and leases.read(doc) is None and task_id(job_id, doc) not in queued:
                if (job_id, doc) in self.unseen:
                    lost.append((doc, "its message was taken by a worker that died"))
                else:
                    unseen.add((job_id, doc))
        return lost

    def prune_processed(self) -> None:
        folder = self.app.conf.broker_transport_options.get("processed_folder")
        if not folder:
            return
        cutoff = time.time() - PROCESSED_KEEP_S
        for path in Path(folder).iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                pass


_stop = threading.Event()


def _run(app: Celery) -> None:
    sweeper = Sweeper(app, job_store())
    while not _stop.wait(get_settings().jobs_sweep_s):
        try:
            sweeper.sweep()
            sweeper.prune_processed()
        except Exception:  # the sweeper must outlive any one bad pass
            log.exception("job sweep failed")


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    _stop.clear()
    threading.Thread(target=_run, args=(sender.app,), name="strata-sweeper", daemon=True).start()


@worker_shutdown.connect
def _stop_sweeping(**_: Any) -> None:
    _stop.set()
