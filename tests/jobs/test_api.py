"""/v1/jobs on a real `strata serve`, whose embedded worker (no Redis) runs the jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Server, notes_text, start_server, stop_server, upload_ready

pytestmark = pytest.mark.timeout(180)


def _worker_pids(server_pid: int) -> list[int]:
    """Processes started with --parent-pid <server>: the embedded worker and its pool."""
    needle = f"--parent-pid\0{server_pid}\0".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and needle in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("jobs-serve")
    srv = start_server(tiny_model, base / "home", base / "serve.log", STRATA_JOBS_POLL_S=0.05)
    try:
        yield srv
    finally:
        stop_server(srv)


def _wait(client: httpx.Client, job_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/jobs/{job_id}").json()
        if body["state"] in ("done", "cancelled"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {body}")


def test_job_over_uploaded_documents(server: Server) -> None:
    with server.client("alice") as alice, server.client("bob") as bob:
        docs = [upload_ready(alice, [(f"{t}.txt", notes_text(t).encode())])["id"] for t in ("billing", "auth")]
        r = alice.post("/v1/jobs", json={"documents": docs, "questions": ["Which bucket?", "Which record?",
                                                                         "Which service?"], "max_tokens": 4})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert r.json()["total"] == 6
        body = _wait(alice, job_id)
        assert (body["state"], body["done"], body["failed"]) == ("done", 6, 0)
        assert [t["state"] for t in body["tasks"]] == ["SUCCESS", "SUCCESS"]
        out = alice.get(f"/v1/jobs/{job_id}/results").json()
        assert out["state"] == "done" and len(out["data"]) == 6
        for item in out["data"]:
            assert item["source"] == f"document:{docs[item['document']]}"
            assert item["citations"][0]["path"] in ("billing.txt", "auth.txt")
            if item["question"] > 0:  # the document's prefix was prefilled once for the job
                assert item["usage"]["cached_tokens"] >= item["usage"]["prompt_tokens"] // 2
        md = alice.get(f"/v1/jobs/{job_id}/results", params={"format": "md"})
        assert md.headers["content-type"].startswith("text/markdown") and "### Which bucket?" in md.text
        lines = alice.get(f"/v1/jobs/{job_id}/results", params={"format": "jsonl"}).text.splitlines()
        assert len(lines) == 6
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/results"):
            assert bob.get(path).status_code == 404  # another tenant's job does not exist
        assert bob.delete(f"/v1/jobs/{job_id}").status_code == 404
        finished = alice.delete(f"/v1/jobs/{job_id}")  # cancelling a finished job changes nothing
        assert finished.status_code == 200 and finished.json()["state"] == "done"


def test_bad_jobs_are_refused(server: Server) -> None:
    with server.client("alice") as alice:
        cases = [({"sources": ["/etc"], "template": "overview"}, 400, "server-side source paths"),
                 ({"documents": ["doc_" + "0" * 24], "template": "overview"}, 404, "no document"),
                 ({"documents": ["doc_" + "0" * 24], "template": "nope"}, 400, "unknown template"),
                 ({"documents": [], "questions": ["q?"]}, 400, "at least one"),
                 ({"documents": ["x"], "questions": ["q?"], "template": "overview"}, 400, "either")]
        for body, code, message in cases:
            r = alice.post("/v1/jobs", json=body)
            assert r.status_code == code and message in r.json()["error"]["message"], (body, r.text)
        assert alice.get("/v1/jobs/" + "f" * 32).status_code == 404
        assert alice.get("/v1/jobs/../../etc").status_code == 404
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.post("/v1/jobs", json={"documents": [], "template": "overview"}).status_code == 401


def test_delete_cancels_and_keeps_results(server: Server) -> None:
    with server.client("alice") as alice:
        doc = upload_ready(alice, [("ops.txt", notes_text("ops").encode())])["id"]
        questions = [f"Question {i}?" for i in range(40)]
        job_id = alice.post("/v1/jobs", json={"documents": [doc], "questions": questions,
                                              "max_tokens": 16}).json()["id"]
        deadline = time.monotonic() + 60
        while alice.get(f"/v1/jobs/{job_id}").json()["done"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        r = alice.delete(f"/v1/jobs/{job_id}")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        time.sleep(2)
        body = alice.get(f"/v1/jobs/{job_id}").json()
        assert body["state"] == "cancelled" and 0 < body["done"] < 40
        assert len(alice.get(f"/v1/jobs/{job_id}/results").json()["data"]) == body["done"]


def test_the_embedded_worker_stops_with_the_server(tiny_model: Path, tmp_path: Path) -> None:
    srv = start_server(tiny_model, tmp_path / "home", tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 30
        while not _worker_pids(srv.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _worker_pids(srv.proc.pid), "strata serve without Redis starts a worker"
    finally:
        stop_server(srv)
    deadline = time.monotonic() + 20
    while _worker_pids(srv.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _worker_pids(srv.proc.pid)
