"""Celery batch analyses over many documents: a thin shell over ingest/ and runtime/.

spec (what a job is) -> service (submit, status, results, cancel; the API and the CLI call it)
-> app (Celery, Redis or the embedded file broker) -> tasks (one task per document, leases, the
sweeper) -> work (a document's questions in a row) -> store (write-once results under home/jobs).
worker runs `strata worker` and the embedded worker of `strata serve`. See docs/jobs.md.
"""
