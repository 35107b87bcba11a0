"""Transient failures are retried with backoff; past the last retry they fail their items, clearly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.service import results, submit
from jobs.spec import make_spec
from tests.jobs.conftest import Cluster, make_cluster
from tests.runtime.model1_tiny import write_tiny_model1

pytestmark = pytest.mark.timeout(180)
RETRIES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("retry")
    model = write_tiny_model1(tmp / "model")  # a private copy: these tests take its weights away
    cluster_iter = make_cluster(tmp, model, None, STRATA_JOBS_MAX_RETRIES=str(RETRIES),
                                STRATA_JOBS_RETRY_BACKOFF_S="0.4")
    cluster = next(cluster_iter)
    cluster.start_worker()
    yield cluster
    next(cluster_iter, None)


def _retries(cluster: Cluster, job_id: str) -> int:
    log = (cluster.home / "worker-0.log").read_text(errors="replace")
    return sum(1 for line in log.splitlines() if f"job {job_id} document 0: transient error, retry" in line)


def test_a_lasting_failure_fails_the_items_after_the_last_retry(cluster: Cluster, sources: list[Path]) -> None:
    weights = cluster.model / "model.safetensors"
    weights.rename(weights.with_suffix(".away"))  # e.g. the model volume is not mounted yet
    try:
        job_id = submit(make_spec([str(sources[0])], None, ["What?", "Why?"], max_new_tokens=4))
        body = cluster.wait_done(job_id)
    finally:
        weights.with_suffix(".away").rename(weights)
    assert (body["state"], body["done"], body["failed"]) == ("done", 2, 2)
    for item in results(job_id):
        assert item["error"]["type"] == "model_unavailable"
        assert "could not load its model (after the last retry)" in item["error"]["message"]
    assert _retries(cluster, job_id) == RETRIES


def test_a_passing_failure_is_retried_until_it_succeeds(cluster: Cluster, sources: list[Path]) -> None:
    weights = cluster.model / "model.safetensors"
    weights.rename(weights.with_suffix(".away"))
    try:
        job_id = submit(make_spec([str(sources[0])], None, ["What?", "Why?"], max_new_tokens=4))
        deadline = time.monotonic() + 60
        while _retries(cluster, job_id) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        weights.with_suffix(".away").rename(weights)  # the volume comes back
    body = cluster.wait_done(job_id)
    assert (body["state"], body["done"], body["failed"]) == ("done", 2, 0)
    assert all(item["answer"] for item in results(job_id))
    assert 1 <= _retries(cluster, job_id) <= RETRIES
