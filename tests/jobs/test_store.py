"""The job store, leases and specs without Celery: write-once results, stale leases, limits."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.lease import Leases
from jobs.spec import TEMPLATES, make_spec
from jobs.store import JobStore
from strata.errors import BadRequest, NotFound


def _spec(n_docs: int = 2, questions: tuple[str, ...] = ("q1?", "q2?")):
    return make_spec([f"/src/{i}" for i in range(n_docs)], None, list(questions))


def _race(root: str, worker: int, barrier) -> bool:  # in a child process
    store = JobStore(Path(root))
    job_id = store.active()[0]
    barrier.wait()
    return store.put_item(job_id, 0, 1, {"worker": worker})


def test_items_are_written_once_even_by_racing_processes(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job_id = store.create(_spec())
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        barrier = ctx.Manager().Barrier(4)
        wins = pool.starmap(_race, [(str(tmp_path), w, barrier) for w in range(4)])
    assert sum(wins) == 1
    (item,) = store.items(job_id)
    assert item["worker"] == wins.index(True)
    assert not store.put_item(job_id, 0, 1, {"worker": 99})
    assert store.items(job_id)[0]["worker"] == wins.index(True)
    assert not list((store.job_dir(job_id) / "items").glob(".*"))  # no temporary files left


def test_status_counts_results_and_documents(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job_id = store.create(_spec())
    assert store.status(job_id)["state"] == "queued"
    store.put_item(job_id, 1, 0, {"answer": "a"})
    store.put_item(job_id, 0, 1, {"error": {"type": "ingest_error", "message": "bad"}})
    body = store.status(job_id)
    assert (body["state"], body["done"], body["total"], body["failed"]) == ("running", 2, 4, 1)
    assert [(i.get("answer"), bool(i.get("error"))) for i in store.items(job_id)] == [(None, True), ("a", False)]
    store.mark_document_done(job_id, 0)
    store.mark_document_done(job_id, 1)
    assert store.status(job_id)["state"] == "done"
    store.cancel(job_id)
    assert store.status(job_id)["state"] == "cancelled"
    assert store.active() == []


def test_unknown_and_malformed_job_ids_are_not_found(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    for bad in ("0" * 32, "../etc", "active", ""):
        with pytest.raises(NotFound):
            store.spec(bad)


def test_lease_of_a_dead_process_is_stale_and_taken_once(tmp_path: Path) -> None:
    leases = Leases(tmp_path, ttl=60)
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(0)"])
    proc.wait()
    (tmp_path / "0").write_text(json.dumps({"state": "running", "task_id": "t", "host": os.uname().nodename,
                                             "pid": proc.pid}))
    held = leases.read(0)
    assert held is not None and leases.stale(held)
    assert leases.take_stale(0)
    assert not leases.take_stale(0)
    assert leases.read(0) is None


def test_live_running_lease_refuses_a_second_claim(tmp_path: Path) -> None:
    leases = Leases(tmp_path, ttl=60)
    (tmp_path / "3").write_text(json.dumps({"state": "running", "task_id": "t", "host": os.uname().nodename,
                                             "pid": os.getppid()}))
    assert not leases.claim(3, "other")
    assert not leases.reserve(3, "other")
    assert not leases.take_stale(3)
    old = time.time() - 120
    os.utime(tmp_path / "3", (old, old))  # stopped beating: stale by age
    assert leases.claim(3, "other")
    held = leases.read(3)
    assert held is not None and (held.state, held.task_id, held.pid) == ("running", "other", os.getpid())


def test_heartbeat_keeps_a_lease_fresh(tmp_path: Path) -> None:
    leases = Leases(tmp_path, ttl=0.4)
    assert leases.claim(0, "t")
    with leases.heartbeat(0):
        time.sleep(1.0)
        held = leases.read(0)
        assert held is not None and not leases.stale(held)
    time.sleep(0.6)
    held = leases.read(0)
    assert held is not None and time.time() - held.beat > 0.4


def test_specs_are_checked_at_the_edge() -> None:
    assert make_spec(["/a"], None, None, "security-review").questions == list(TEMPLATES["security-review"])
    with pytest.raises(BadRequest, match="either questions or a template"):
        make_spec(["/a"], None, ["q?"], "overview")
    with pytest.raises(BadRequest, match="either questions or a template"):
        make_spec(["/a"], None, None, None)
    with pytest.raises(BadRequest, match="unknown template"):
        make_spec(["/a"], None, None, "nope")
    with pytest.raises(BadRequest, match="at least one source"):
        make_spec([], None, ["q?"])
    with pytest.raises(BadRequest, match="empty"):
        make_spec(["/a"], None, ["  "])
    with pytest.raises(BadRequest, match="at most"):
        make_spec(["/a"], None, [f"q{i}?" for i in range(1000)])
    with pytest.raises(BadRequest, match="invalid job"):
        make_spec(["/a"], None, ["q?"], max_new_tokens=0)
