"""Real Celery workers as separate processes, over the embedded broker or a real redis-server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from strata.settings import get_settings
from tests.runtime.model1_tiny import write_tiny_model1

READY_S = 90.0


@dataclass
class Cluster:
    """Workers sharing one STRATA_HOME (and Redis, when given); this process is the client."""

    home: Path
    model: Path
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self, concurrency: int = 1) -> subprocess.Popen[bytes]:
        from jobs.worker import spawn_worker

        log = self.home / f"worker-{len(self.workers)}.log"
        proc = spawn_worker(self.model, concurrency, env=self.env, log=log)
        self.workers.append(proc)
        deadline = time.monotonic() + READY_S
        while b" ready." not in (log.read_bytes() if log.exists() else b""):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool processes (its own process group)."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        from jobs.worker import stop_worker

        for proc in self.workers:
            stop_worker(proc)

    def wait_done(self, job_id: str, timeout: float = 120.0) -> dict:
        from jobs.service import status

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = status(job_id)
            if body["state"] in ("done", "cancelled"):
                return body
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} not done in {timeout}s: {status(job_id)}")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model1(tmp_path_factory.mktemp("jobs-model") / "model1")


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four small source files, each one document."""
    root = tmp_path_factory.mktemp("jobs-sources")
    out = []
    for i in range(4):
        path = root / f"mod{i}.py"
        path.write_text(f'"""Module {i}."""\n\n\ndef area_{i}(w, h):\n    return w * h + {i}\n\n\n'
                        f"class Shape{i}:\n    sides = {i + 3}\n")
        out.append(path)
    return out


def make_cluster(tmp: Path, model: Path, redis_url: str | None, **extra: str) -> Iterator[Cluster]:
    env = {"STRATA_HOME": str(tmp / "home"), "STRATA_JOBS_LEASE_S": "3", "STRATA_JOBS_SWEEP_S": "0.5",
           "STRATA_JOBS_RETRY_BACKOFF_S": "0.2", "STRATA_JOBS_POLL_S": "0.05", "STRATA_THREADS": "1",
           "STRATA_JOBS_QUEUE": f"strata-jobs-test-{uuid.uuid4().hex[:8]}",  # never a shared Redis's real queue
           **extra}
    if redis_url:
        env["STRATA_REDIS_URL"] = redis_url
    cluster = Cluster(tmp / "home", model, env)
    cluster.home.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        if not redis_url:
            mp.delenv("STRATA_REDIS_URL", raising=False)
        get_settings.cache_clear()
        try:
            yield cluster
        finally:
            cluster.stop_all()
            get_settings.cache_clear()
