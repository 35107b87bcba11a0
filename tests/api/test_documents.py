"""Documents over HTTP: upload (files, archives, background), ledger, ask (JSON and SSE), sources."""

from __future__ import annotations

import json
import time

import httpx

from tests.api.conftest import REPO, Server, notes_text, upload, upload_ready, zip_bytes


def sse_events(response: httpx.Response) -> list[dict]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
    return events


def test_repository_archive_upload_list_get_delete(server: Server) -> None:
    repo = {f"shop/{p.relative_to(REPO / 'samples/repo')}": p.read_bytes()
            for p in sorted((REPO / "samples/repo").rglob("*")) if p.is_file()}
    with server.client() as http:
        doc = upload_ready(http, [("shop.zip", zip_bytes(repo))])
        assert doc["sources"] == ["shop"] and doc["tokens"] > 0 and doc["items"] > 0
        full = http.get(f"/v1/documents/{doc['id']}").json()
        paths = {item["path"]: item["status"] for item in full["ledger"]}
        assert paths["shop/app.py"] == "included"
        assert "dropped" in {item["status"] for item in full["ledger"]}  # vendor/lock/log files
        assert "tenant" not in full
        assert doc["id"] in [d["id"] for d in http.get("/v1/documents").json()["data"]]
        assert http.delete(f"/v1/documents/{doc['id']}").json() == {"id": doc["id"], "deleted": True}
        gone = http.get(f"/v1/documents/{doc['id']}")
        assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found"
        assert http.delete(f"/v1/documents/{doc['id']}").status_code == 404
    assert not (server.home / "uploads" / "alice" / doc["id"]).exists()


def test_ask_json_then_stream_and_cached_prefix(server: Server) -> None:
    with server.client() as http:
        doc = upload_ready(http, [("orders.txt", notes_text("orders").encode())])
        q = {"question": "Which bucket holds record 21?", "max_tokens": 10}
        first = http.post(f"/v1/documents/{doc['id']}/ask", json=q)
        assert first.status_code == 200, first.text
        a = first.json()
        assert set(a) >= {"answer", "citations", "usage", "timings", "finish_reason"}
        assert a["usage"]["completion_tokens"] > 0 and a["timings"]["ttft_s"] > 0
        assert a["citations"] and a["citations"][0]["path"] == "orders.txt"
        second = http.post(f"/v1/documents/{doc['id']}/ask", json=q).json()
        assert second["usage"]["cached_tokens"] > 0
        assert second["answer"] == a["answer"]
        with http.stream("POST", f"/v1/documents/{doc['id']}/ask", json={**q, "stream": True}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r)
        deltas = [e["text"] for e in events if e["type"] == "delta"]
        done = events[-1]
        assert done["type"] == "done" and len(deltas) >= 1
        assert "".join(deltas) == done["answer"] == a["answer"]
        assert done["usage"]["cached_tokens"] > 0
        cite = a["citations"][0]
        src = http.get(f"/v1/documents/{doc['id']}/source",
                       params={"path": cite["path"], "line_start": 3, "line_end": 4}).json()
        assert src["kind"] == "text" and src["first_line"] == 1
        assert src["lines"][2] == notes_text("orders").splitlines()[2]


def test_ask_errors_are_json(server: Server) -> None:
    with server.client() as http:
        doc = upload_ready(http, [("a.txt", b"alpha beta gamma\n")])
        url = f"/v1/documents/{doc['id']}/ask"
        for body, status in [({"question": ""}, 400), ({"question": "q", "max_tokens": 999}, 400),
                             ({"question": "q", "bogus": 1}, 400), ({"question": "q", "temperature": -1}, 400)]:
            r = http.post(url, json=body)
            assert r.status_code == status, (body, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error"
        r = http.post(url, content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "error" in r.json()
        assert http.post("/v1/documents/doc_" + "1" * 24 + "/ask", json={"question": "q"}).status_code == 404
        assert http.post("/v1/documents/../../etc/ask", json={"question": "q"}).status_code == 404
        r = http.get(f"/v1/documents/{doc['id']}/source", params={"path": "../../meta.json"})
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
        assert http.get("/v1/nothing-here").json() == {"error": {"type": "not_found", "message": "Not Found"}}
        assert http.put("/v1/documents").status_code == 405
    with server.client(None) as anon:
        r = anon.get("/v1/documents")
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_pdf_page_and_video_frame_sources(server: Server) -> None:
    pdf = (REPO / "samples/docs/report.pdf").read_bytes()
    mp4 = (REPO / "samples/video/demo.mp4").read_bytes()
    with server.client() as http:
        doc = upload_ready(http, [("report.pdf", pdf), ("demo.mp4", mp4)])
        kinds = {i["path"]: i["status"] for i in http.get(f"/v1/documents/{doc['id']}").json()["ledger"]}
        assert set(kinds) == {"report.pdf", "demo.mp4"}
        assert set(kinds.values()) <= {"included", "outlined"}  # within the tiny model's budget
        page = http.get(f"/v1/documents/{doc['id']}/source", params={"path": "report.pdf", "page": 1})
        assert page.status_code == 200 and page.headers["content-type"] == "image/png"
        assert page.content.startswith(b"\x89PNG")
        frame = http.get(f"/v1/documents/{doc['id']}/source", params={"path": "demo.mp4", "time_s": 1.0})
        assert frame.status_code == 200 and frame.content.startswith(b"\x89PNG")
        bad = http.get(f"/v1/documents/{doc['id']}/source", params={"path": "report.pdf", "page": 999})
        assert bad.status_code == 400 and "outside" in bad.json()["error"]["message"]


def test_large_upload_ingests_in_the_background(server: Server) -> None:
    big = notes_text("archive", lines=5000).encode()  # over STRATA_UPLOAD_SYNC_BYTES
    assert len(big) > 300_000
    with server.client() as http:
        r = upload(http, [("big.txt", big)])
        assert r.status_code == 202 and r.json()["status"] == "processing"
        doc_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while (doc := http.get(f"/v1/documents/{doc_id}").json())["status"] == "processing":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert doc["status"] == "ready" and doc["tokens"] > 0
        assert doc["summary"]["tokens"] == doc["tokens"]


def test_web_page_and_static_assets_are_served(server: Server) -> None:
    with server.client(None) as anon:
        page = anon.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "/static/app.js" in page.text and "http" not in page.text.split("<body>")[1].split("src=")[0]
        assert anon.get("/static/app.js").status_code == 200
        assert anon.get("/healthz").json()["status"] == "ok"




def test_json_bodies_are_limited_as_they_enter(server: Server) -> None:
    """STRATA_MAX_REQUEST_BYTES (64 KiB here) for every body but uploads, declared or streamed."""
    big = {"model": server.model.name, "messages": [{"role": "user", "content": "x" * 100_000}]}
    with server.client() as http:
        r = http.post("/v1/chat/completions", json=big)
        assert r.status_code == 413 and "max_request_bytes" in r.json()["error"]["message"]
        chunked = http.post("/v1/chat/completions", content=iter([json.dumps(big).encode()]),
                            headers={"content-type": "application/json"})
        assert "content-length" not in chunked.request.headers
        assert chunked.status_code == 413 and chunked.json()["error"]["type"] == "payload_too_large"
        small = {**big, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert http.post("/v1/chat/completions", json=small).status_code == 200
