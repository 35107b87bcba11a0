"""A real `strata serve` (uvicorn, subprocess) on a free port over the tiny MODEL1 checkpoint."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.runtime.model1_tiny import write_tiny_model1

REPO = Path(__file__).resolve().parents[2]
KEYS = {"alice": "sk-alice-0123456789abcdef", "bob": "sk-bob-0123456789abcdef00"}
LIMITS = {
    "STRATA_MAX_UPLOAD_BYTES": 2_000_000,
    "STRATA_MAX_ARCHIVE_ENTRIES": 64,
    "STRATA_MAX_UNPACKED_BYTES": 4_000_000,
    "STRATA_UPLOAD_SYNC_BYTES": 300_000,
    "STRATA_MAX_TOKENS_PER_REQUEST": 256,
    "STRATA_QUEUE_DEPTH": 4,
    "STRATA_MAX_REQUEST_BYTES": 65536,
}


@dataclass
class Server:
    url: str
    home: Path
    model: Path
    proc: subprocess.Popen

    def client(self, tenant: str | None = "alice", **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {KEYS[tenant]}"} if tenant else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env(home: Path, **extra: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    env.update({"STRATA_HOME": str(home), "STRATA_THREADS": "1", "PYTHONPATH": str(REPO),
                "STRATA_API_KEYS": json.dumps({v: k for k, v in KEYS.items()})})
    env.update({k: str(v) for k, v in {**LIMITS, **extra}.items()})
    return env


def serve_cmd(model: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    return [sys.executable, "-c", "from strata.cli import main; raise SystemExit(main())", "serve",
            "--model", str(model), "--host", host, "--port", str(port), "--log-level", "warning"]


def start_server(model: Path, home: Path, log: Path, **extra: object) -> Server:
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(serve_cmd(model, port), env=serve_env(home, **extra), cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"strata serve exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Server(url, home, model, proc)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"strata serve did not become healthy: {log.read_text()[-2000:]}")


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model1(tmp_path_factory.mktemp("model") / "tiny-model1")


@pytest.fixture(scope="session")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("serve")
    srv = start_server(tiny_model, base / "home", base / "serve.log")
    try:
        yield srv
    finally:
        stop_server(srv)


def notes_text(topic: str, lines: int = 60) -> str:
    """Plain text long enough to fill several 64-token KV pages."""
    return "".join(f"{topic} note {i}: the {topic} service keeps record {i * 7} in bucket {i % 5}.\n"
                   for i in range(lines))


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def upload(client: httpx.Client, files: list[tuple[str, bytes]]) -> httpx.Response:
    return client.post("/v1/documents", files=[("files", (name, data)) for name, data in files])


def upload_ready(client: httpx.Client, files: list[tuple[str, bytes]]) -> dict:
    r = upload(client, files)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "ready", body
    return body
