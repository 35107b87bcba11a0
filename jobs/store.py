"""The job store: a job's spec, its write-once results and its markers, as files under home/jobs.

Layout of one job (every write is atomic: a temporary file, then a rename or a hard link):

    <id>/spec.json            the JobSpec
    <id>/meta.json            created_at
    <id>/items/<d>-<q>.json   one result per (document d, question q), written once: the first wins
    <id>/failed/<d>-<q>       that result is an error
    <id>/done/<d>             document d has a result for every question
    <id>/leases/<d>           who is working on document d (see jobs.lease)
    <id>/attempts/<d>.{begun,ended}  one byte per attempt at document d begun / ended cleanly
    <id>/cancelled            the job was cancelled
    active/<id>               the job is neither finished nor cancelled (what the sweeper scans)
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from jobs.lease import Leases
from jobs.spec import JobSpec
from strata.errors import NotFound

JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a reader sees the old bytes or the new, never a torn file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_once(path: Path, data: bytes) -> bool:
    """Create `path` with `data` unless it exists; True when this call wrote it."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)  # atomic and exclusive: exactly one writer wins
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class JobStore:
    """Jobs under one root (settings.home / "jobs"); shared by the API, the CLI and the workers."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "active").mkdir(parents=True, exist_ok=True)

    # -- a job's life ---------------------------------------------------------------------------
    def create(self, spec: JobSpec) -> str:
        """Persist a new job and mark it active; returns its id."""
        job_id = uuid.uuid4().hex
        d = self.root / job_id
        for sub in ("items", "failed", "done", "leases", "attempts"):
            (d / sub).mkdir(parents=True)
        write_atomic(d / "spec.json", spec.model_dump_json().encode())
        write_atomic(d / "meta.json", json.dumps({"created_at": time.time()}).encode())
        (self.root / "active" / job_id).touch()
        return job_id

    def job_dir(self, job_id: str) -> Path:
        d = self.root / job_id
        if not JOB_ID.match(job_id) or not (d / "spec.json").is_file():
            raise NotFound(f"no job '{job_id}'")
        return d

    def spec(self, job_id: str) -> JobSpec:
        return JobSpec.model_validate_json((self.job_dir(job_id) / "spec.json").read_bytes())

    def meta(self, job_id: str) -> dict[str, Any]:
        meta: dict[str, Any] = json.loads((self.job_dir(job_id) / "meta.json").read_bytes())
        return meta

    def leases(self, job_id: str, ttl: float) -> Leases:
        return Leases(self.job_dir(job_id) / "leases", ttl)

    def cancel(self, job_id: str) -> None:
        (self.job_dir(job_id) / "cancelled").touch()
        self.finish(job_id)

    def cancelled(self, job_id: str) -> bool:
        return (self.job_dir(job_id) / "cancelled").exists()

    def finish(self, job_id: str) -> None:
        """Take the job off the active list (finished or cancelled)."""
        (self.root / "active" / job_id).unlink(missing_ok=True)

    def active(self) -> list[str]:
        return sorted(p.name for p in (self.root / "active").iterdir() if JOB_ID.match(p.name))

    # -- results --------------------------------------------------------------------------------
    def put_item(self, job_id: str, doc: int, question: int, record: dict[str, Any]) -> bool:
        """Store the result of (doc, question) unless one is already stored; True when this call did."""
        d = self.job_dir(job_id)
        written = write_once(d / "items" / f"{doc}-{question}.json", json.dumps(record, default=str).encode())
        if written and record.get("error"):
            (d / "failed" / f"{doc}-{question}").touch()  # counted by status without reading results
        return written

    def has_item(self, job_id: str, doc: int, question: int) -> bool:
        return (self.job_dir(job_id) / "items" / f"{doc}-{question}.json").exists()

    def items(self, job_id: str) -> list[dict[str, Any]]:
        """Every stored result, in (document, question) order."""
        paths = (self.job_dir(job_id) / "items").glob("[0-9]*-[0-9]*.json")
        keyed = sorted((tuple(int(x) for x in p.stem.split("-")), p) for p in paths)
        return [json.loads(p.read_bytes()) for _, p in keyed]

    def item_count(self, job_id: str) -> int:
        return sum(1 for _ in (self.job_dir(job_id) / "items").glob("[0-9]*-[0-9]*.json"))

    def begin_attempt(self, job_id: str, doc: int) -> int:
        """Count an attempt at `doc`; returns how many earlier attempts never ended (their process died)."""
        folder = self.job_dir(job_id) / "attempts"
        begun, ended = folder / f"{doc}.begun", folder / f"{doc}.ended"
        unclean = _size(begun) - _size(ended)
        with open(begun, "ab") as f:  # O_APPEND: one byte per attempt, never torn
            f.write(b".")
        return unclean

    def end_attempt(self, job_id: str, doc: int) -> None:
        with open(self.job_dir(job_id) / "attempts" / f"{doc}.ended", "ab") as f:
            f.write(b".")

    def mark_document_done(self, job_id: str, doc: int) -> None:
        (self.job_dir(job_id) / "done" / str(doc)).touch()

    def document_done(self, job_id: str, doc: int) -> bool:
        return (self.job_dir(job_id) / "done" / str(doc)).exists()

    def documents_done(self, job_id: str) -> int:
        return sum(1 for _ in (self.job_dir(job_id) / "done").iterdir())

    # -- status ---------------------------------------------------------------------------------
    def status(self, job_id: str) -> dict[str, Any]:
        """State (queued | running | done | cancelled), progress and failures, from the files alone."""
        spec, d = self.spec(job_id), self.job_dir(job_id)
        done = self.item_count(job_id)
        failed = sum(1 for _ in (d / "failed").iterdir())
        if self.cancelled(job_id):
            state = "cancelled"
        elif self.documents_done(job_id) >= len(spec.documents):
            state = "done"
        elif done or any((d / "leases").iterdir()):
            state = "running"
        else:
            state = "queued"
        return {"id": job_id, "state": state, "done": done, "total": spec.total, "failed": failed,
                "documents": len(spec.documents), "documents_done": self.documents_done(job_id),
                "questions": len(spec.questions), "template": spec.template, "tenant": spec.tenant,
                "created_at": self.meta(job_id)["created_at"]}
