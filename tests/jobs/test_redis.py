"""Jobs over a real redis-server: two worker processes share one job; one is SIGKILLed mid-job."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.app import get_app
from jobs.service import results, status, submit
from jobs.spec import make_spec
from tests.jobs.conftest import Cluster, make_cluster

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, redis_url: str) -> Iterator[Cluster]:
    cluster_iter = make_cluster(tmp_path_factory.mktemp("redis"), tiny_model, redis_url)
    cluster = next(cluster_iter)
    cluster.start_worker()
    cluster.start_worker()
    yield cluster
    next(cluster_iter, None)


def _pids(items: list[dict]) -> set[int]:
    return {int(i["worker"].rsplit(":", 1)[1]) for i in items}


def test_the_app_uses_redis(cluster: Cluster, redis_url: str) -> None:
    conf = get_app().conf
    assert conf.broker_url == redis_url and conf.result_backend == redis_url
    assert conf.task_acks_late and conf.task_reject_on_worker_lost


def test_two_workers_share_one_job(cluster: Cluster, sources: list[Path]) -> None:
    questions = [f"Question {i}: what does this module define?" for i in range(4)]
    job_id = submit(make_spec([str(p) for p in sources], None, questions, max_new_tokens=12))
    body = cluster.wait_done(job_id)
    assert (body["state"], body["done"], body["total"], body["failed"]) == ("done", 16, 16, 0)
    assert all(t["state"] == "SUCCESS" and t["done"] == t["total"] == 4 for t in body["tasks"])
    items = results(job_id)
    assert len({(i["document"], i["question"]) for i in items}) == 16
    assert len(_pids(items)) == 2, "both worker processes answered part of the job"
    for doc in range(4):  # one document's questions stay on one process, in a row (prefix reuse)
        assert len(_pids([i for i in items if i["document"] == doc])) == 1


def test_worker_sigkilled_mid_job_the_job_still_completes_once(cluster: Cluster,
                                                               sources: list[Path]) -> None:
    n = 10
    questions = [f"Question {i}: what does this code compute?" for i in range(n)]
    job_id = submit(make_spec([str(p) for p in sources], None, questions, max_new_tokens=32))
    jobs = cluster.home / "jobs" / job_id
    deadline = time.monotonic() + 90
    victim = None
    while victim is None and time.monotonic() < deadline:
        items = results(job_id)
        first = [i for i in items if i["question"] == 0]
        unfinished = [i for i in first if not (jobs / "done" / str(i["document"])).exists()
                      and sum(j["document"] == i["document"] for j in items) <= 3]
        if unfinished:
            doc = unfinished[0]["document"]
            victim = int(unfinished[0]["worker"].rsplit(":", 1)[1])
        time.sleep(0.05)
    assert victim is not None, "no document was ever seen mid-way"
    before = {(i["document"], i["question"]): i for i in results(job_id)}
    owner = next(w for w in cluster.workers if w.poll() is None and _is_ancestor(w.pid, victim))
    cluster.kill(owner)  # the whole worker: main process and its pool, as the OOM killer would
    body = cluster.wait_done(job_id, timeout=120)
    assert (body["state"], body["done"], body["total"], body["failed"]) == ("done", 4 * n, 4 * n, 0)
    items = results(job_id)
    assert [(i["document"], i["question"]) for i in items] == [(d, q) for d in range(4) for q in range(n)]
    for key, item in before.items():
        assert items[key[0] * n + key[1]] == item  # each result exactly once, never rewritten
    finishers = _pids([i for i in items if i["document"] == doc])
    assert victim in finishers and len(finishers) == 2, "a survivor finished the killed worker's document"
    assert status(job_id)["documents_done"] == 4


def _is_ancestor(ancestor: int, pid: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    return False


def test_results_survive_the_workers(cluster: Cluster) -> None:
    done = [p.name for p in (cluster.home / "jobs").iterdir() if len(p.name) == 32]
    cluster.stop_all()
    assert all(w.poll() is not None for w in cluster.workers)
    for job_id in done:
        assert status(job_id)["state"] == "done" and results(job_id)
    assert os.path.isdir(cluster.home / "jobs")
