"""The bounded queue (429 + Retry-After, never a hang), request timeouts, local mode and /metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from api.app import create_app
from runtime import Engine
from strata.settings import Settings
from tests.api.conftest import KEYS, Server, notes_text, upload_ready


def drained(health: Callable[[], dict], within_s: float = 5.0) -> bool:
    """True once no request is admitted (the worker releases a place just after the last event)."""
    deadline = time.monotonic() + within_s
    while health()["queue"] != 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_over_the_queue_bound_requests_get_429_not_timeouts(server: Server) -> None:
    body = {"model": server.model.name, "max_tokens": 256, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell me a long story."}]}
    headers = {"Authorization": f"Bearer {KEYS['alice']}"}

    def post(_: int) -> httpx.Response:
        return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, range(16)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 429}, codes
    assert 1 <= codes.count(200) <= 16 - codes.count(429)
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["type"] == "rate_limit_error"
    assert drained(lambda: httpx.get(f"{server.url}/healthz").json())  # every place given back


def test_metrics_report_requests_ttft_cache_kv_and_queue(server: Server) -> None:
    with server.client() as http:
        doc = upload_ready(http, [("metrics.txt", notes_text("metrics").encode())])
        for _ in range(2):
            http.post(f"/v1/documents/{doc['id']}/ask", json={"question": "q?", "max_tokens": 3})
        http.get("/v1/documents/doc_000000000000000000000000")
        text = http.get("/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['strata_requests_total{method="POST",route="/v1/documents/{doc_id}/ask",status="200"}'] >= 2
    assert samples['strata_requests_total{method="GET",route="/v1/documents/{doc_id}",status="404"}'] >= 1
    assert samples["strata_ttft_seconds_count"] >= 2
    assert samples["strata_decode_tokens_per_second_count"] >= 1
    assert 0 < samples["strata_cache_hit_ratio"] < 1
    assert samples["strata_cached_tokens_total"] > 0
    assert samples['strata_kv_bytes{tier="device"}'] > 0
    assert samples["strata_queue_depth"] == 0


def test_local_mode_and_request_timeout(tiny_model: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, auth="none", local_tenant="me", request_timeout_s=0.05,
                        max_tokens_per_request=256)

    def engine(_: Settings) -> Engine:
        return Engine.from_pretrained(tiny_model, cache=False)

    with TestClient(create_app(settings, engine)) as client:
        doc = upload_ready(client, [("a.txt", b"local notes\n")])
        assert (tmp_path / "uploads" / "me" / doc["id"] / "meta.json").is_file()
        r = client.post("/v1/chat/completions", json={
            "model": tiny_model.name, "max_tokens": 256, "temperature": 0,
            "messages": [{"role": "user", "content": "A long answer, please."}]})
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
        assert drained(lambda: client.get("/healthz").json())  # the stopped job gave its place back


def test_a_client_that_leaves_mid_stream_frees_the_engine(server: Server) -> None:
    def stopped() -> float:
        text = httpx.get(f"{server.url}/metrics").text
        return float(next(line.split()[-1] for line in text.splitlines()
                          if line.startswith("strata_requests_stopped_total")))

    before = stopped()
    body = {"model": server.model.name, "max_tokens": 256, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": "Write a very long story."}]}
    with server.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))  # the stream has begun
    assert drained(lambda: httpx.get(f"{server.url}/healthz").json())
    assert stopped() == before + 1  # stopped between two tokens, not run to the end
