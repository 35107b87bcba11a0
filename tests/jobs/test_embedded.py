"""Jobs over the embedded broker (kombu filesystem transport, file result backend) and a real worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.service import cancel, results, status, submit
from jobs.spec import TEMPLATES, make_spec
from tests.jobs.conftest import Cluster, make_cluster

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Cluster]:
    cluster_iter = make_cluster(tmp_path_factory.mktemp("embedded"), tiny_model, None)
    cluster = next(cluster_iter)
    cluster.start_worker()
    yield cluster
    next(cluster_iter, None)


def _keys(items: list[dict]) -> list[tuple[int, int]]:
    return [(i["document"], i["question"]) for i in items]


def test_template_job_answers_every_document_and_question(cluster: Cluster, sources: list[Path]) -> None:
    spec = make_spec([str(p) for p in sources[:2]], None, None, "overview", max_new_tokens=6)
    job_id = submit(spec)
    body = cluster.wait_done(job_id)
    assert (body["state"], body["done"], body["total"], body["failed"]) == ("done", 6, 6, 0)
    assert [(t["state"], t["done"], t["total"]) for t in body["tasks"]] == [("SUCCESS", 3, 3)] * 2
    items = results(job_id)
    assert _keys(items) == [(d, q) for d in range(2) for q in range(3)]
    for item in items:
        assert item["question_text"] == TEMPLATES["overview"][item["question"]]
        assert item["source"] == str(sources[item["document"]])
        assert item["citations"] and item["citations"][0]["path"] == sources[item["document"]].name
        assert item["usage"]["completion_tokens"] > 0 and item["timings"]["ttft_s"] > 0
        assert "error" not in item and item["finish_reason"] in ("stop", "length")


def test_questions_over_one_document_reuse_its_prefix(cluster: Cluster, tmp_path: Path) -> None:
    """Prefilled once per document per job: every later question hits the cached material."""
    source = tmp_path / "long.py"
    source.write_text("".join(f"def step_{i}(x):\n    return x + {i}\n\n" for i in range(60)))
    spec = make_spec([str(source)], None, ["What is step_3?", "What is step_40?", "How many steps?"],
                     max_new_tokens=4)
    job_id = submit(spec)
    cluster.wait_done(job_id)
    usage = [item["usage"] for item in results(job_id)]
    assert usage[0]["prompt_tokens"] > 256 and usage[0]["cached_tokens"] == 0
    for u in usage[1:]:
        assert u["cached_tokens"] >= u["prompt_tokens"] // 2, usage


def test_poison_document_fails_its_own_items_only(cluster: Cluster, sources: list[Path],
                                                  tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file.py"
    too_long = "Is " + "this and " * 3000 + "that?"  # longer than the whole context
    spec = make_spec([str(missing), str(sources[0])], None, ["What?", too_long, "Why?"], max_new_tokens=4)
    job_id = submit(spec)
    body = cluster.wait_done(job_id)
    assert (body["state"], body["done"], body["failed"]) == ("done", 6, 4)
    items = results(job_id)
    for item in items[:3]:
        assert item["error"]["type"] == "ingest_error" and "no-such-file.py" in item["error"]["message"]
        assert "answer" not in item
    assert items[4]["error"]["type"] == "context_length_exceeded"
    for item in (items[3], items[5]):
        assert "error" not in item and item["answer"]


def _running_lease(cluster: Cluster, job_id: str) -> tuple[int, int]:
    """(document, pid) of the first document some process is answering, once it has one result."""
    leases = cluster.home / "jobs" / job_id / "leases"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for path in leases.glob("[0-9]*"):
            try:
                lease = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            doc = int(path.name)
            answered = list((cluster.home / "jobs" / job_id / "items").glob(f"{doc}-*.json"))
            if lease["state"] == "running" and answered:
                return doc, lease["pid"]
        time.sleep(0.05)
    raise AssertionError("no document was ever seen mid-way")


def _progress(job_id: str, doc: int) -> dict:
    """The document task's state once it reports progress (it does after each question)."""
    deadline = time.monotonic() + 5
    while True:
        task = status(job_id)["tasks"][doc]
        if task["state"] == "PROGRESS" or time.monotonic() > deadline:
            return task
        time.sleep(0.01)


def test_pool_process_killed_mid_document_is_requeued(cluster: Cluster, sources: list[Path]) -> None:
    """reject_on_worker_lost: the dead process's document goes back to the queue and is finished."""
    questions = [f"Question {i}: what does this code compute?" for i in range(6)]
    job_id = submit(make_spec([str(p) for p in sources[:2]], None, questions, max_new_tokens=24))
    doc, pid = _running_lease(cluster, job_id)
    progress = _progress(job_id, doc)
    before = {(i["document"], i["question"]): i for i in results(job_id)}
    os.kill(pid, signal.SIGKILL)
    body = cluster.wait_done(job_id)
    assert (body["state"], body["done"], body["failed"]) == ("done", 12, 0)
    items = results(job_id)
    assert _keys(items) == [(d, q) for d in range(2) for q in range(6)]
    for key, item in before.items():
        assert items[key[0] * 6 + key[1]] == item  # written once, never overwritten
    workers = {i["worker"] for i in items if i["document"] == doc}
    assert f"{os.uname().nodename}:{pid}" in workers and len(workers) == 2
    assert progress["state"] == "PROGRESS" and 1 <= progress["done"] < progress["total"] == 6, progress


def _lease_pid(cluster: Cluster, job_id: str, doc: int, not_in: set[int]) -> int:
    path = cluster.home / "jobs" / job_id / "leases" / str(doc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            lease = json.loads(path.read_text())
        except (OSError, ValueError):
            lease = {}
        if lease.get("state") == "running" and lease["pid"] not in not_in:
            return int(lease["pid"])
        time.sleep(0.02)
    raise AssertionError(f"document {doc} was not started again")


def test_a_document_that_keeps_killing_its_process_fails_alone(cluster: Cluster, sources: list[Path]) -> None:
    """Requeued after every crash (reject_on_worker_lost) until jobs_max_crashes; then its items fail."""
    questions = [f"Question {i}: what does this code compute?" for i in range(6)]
    job_id = submit(make_spec([str(p) for p in sources[:2]], None, questions, max_new_tokens=24))
    killed: set[int] = set()
    for _ in range(3):  # STRATA_JOBS_MAX_CRASHES defaults to 3
        pid = _lease_pid(cluster, job_id, 0, killed)
        os.kill(pid, signal.SIGKILL)
        killed.add(pid)
    body = cluster.wait_done(job_id)
    items = results(job_id)
    lost = [i for i in items if i.get("error")]
    assert body["state"] == "done" and body["done"] == 12 and body["failed"] == len(lost) > 0
    assert all(i["document"] == 0 and i["error"]["type"] == "worker_lost" for i in lost)
    assert "died 3 times" in lost[0]["error"]["message"]
    assert all(i["answer"] for i in items if i["document"] == 1)


def test_cancel_stops_the_job(cluster: Cluster, sources: list[Path]) -> None:
    questions = [f"Question {i}?" for i in range(8)]
    job_id = submit(make_spec([str(p) for p in sources], None, questions, max_new_tokens=16))
    deadline = time.monotonic() + 60
    while not results(job_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    body = cancel(job_id)
    assert body["state"] == "cancelled"
    time.sleep(3)  # the running document stops after its current question
    settled = len(results(job_id))
    time.sleep(2)
    assert len(results(job_id)) == settled < 32
    assert status(job_id)["state"] == "cancelled"
    assert not (cluster.home / "jobs" / "active" / job_id).exists()


def test_cli_submit_status_results(cluster: Cluster, sources: list[Path], tmp_path: Path) -> None:
    qfile = tmp_path / "questions.txt"
    qfile.write_text("# comments are skipped\nWhat is area_1?\n\nWhat is Shape1?\n")
    env = {**os.environ, **cluster.env}

    def strata(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "from strata.cli import main; raise SystemExit(main())",
                               *args], env=env, capture_output=True, text=True, timeout=60)

    out = strata("jobs", "submit", "--questions", str(qfile), "--max-new-tokens", "4", str(sources[1]),
                 "--json")
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["id"]
    assert json.loads(out.stdout)["total"] == 2
    cluster.wait_done(job_id)
    status_out = strata("jobs", "status", job_id, "--json")
    assert json.loads(status_out.stdout)["state"] == "done"
    lines = strata("jobs", "results", job_id).stdout.splitlines()
    assert [json.loads(line)["question_text"] for line in lines] == ["What is area_1?", "What is Shape1?"]
    md = strata("jobs", "results", job_id, "--format", "md").stdout
    assert md.startswith(f"## {sources[1]}") and "### What is Shape1?" in md and "Sources: mod1.py" in md
    bad = strata("jobs", "status", "f" * 32)
    assert bad.returncode == 2 and "no job" in bad.stderr
    both = strata("jobs", "submit", "--template", "nope", str(sources[1]))
    assert both.returncode == 2 and "unknown template" in both.stderr
    counts = Counter(json.loads(line)["document"] for line in lines)
    assert counts == {0: 2}


def test_whole_worker_killed_the_restarted_one_finishes(cluster: Cluster, sources: list[Path]) -> None:
    """The filesystem broker deleted the message when the worker took it: the lease is all that is left."""
    questions = [f"Question {i}: what does this code compute?" for i in range(6)]
    job_id = submit(make_spec([str(p) for p in sources[:2]], None, questions, max_new_tokens=24))
    doc, pid = _running_lease(cluster, job_id)
    before = {(i["document"], i["question"]): i for i in results(job_id)}
    (worker,) = [w for w in cluster.workers if w.poll() is None]
    cluster.kill(worker)
    queue = cluster.home / "jobs" / "broker" / "queue"
    # the killed document's message is gone from the queue: only its lease can bring it back
    assert not [m for m in queue.iterdir() if f'"{job_id}-{doc}"' in m.read_text()]
    cluster.start_worker()
    body = cluster.wait_done(job_id)
    assert (body["state"], body["done"], body["failed"]) == ("done", 12, 0)
    items = results(job_id)
    assert _keys(items) == [(d, q) for d in range(2) for q in range(6)]
    for key, item in before.items():
        assert items[key[0] * 6 + key[1]] == item
    workers = {i["worker"] for i in items if i["document"] == doc}
    assert f"{os.uname().nodename}:{pid}" in workers and len(workers) == 2


def test_a_message_taken_by_a_worker_that_died_before_leasing_is_sent_again(cluster: Cluster,
                                                                           sources: list[Path]) -> None:
    (worker,) = [w for w in cluster.workers if w.poll() is None]
    cluster.kill(worker)
    job_id = submit(make_spec([str(sources[3])], None, ["What?", "Why?"], max_new_tokens=4))
    queue = cluster.home / "jobs" / "broker" / "queue"
    (message,) = [m for m in queue.iterdir() if f'"{job_id}-0"' in m.read_text()]
    message.unlink()  # what taking it does on the file broker; that worker never leased the document
    cluster.start_worker()
    body = cluster.wait_done(job_id, timeout=60)
    assert (body["state"], body["done"], body["failed"]) == ("done", 2, 0)
    log = (cluster.home / f"worker-{len(cluster.workers) - 1}.log").read_text()
    assert f"job {job_id} document 0: its message was taken by a worker that died" in log
