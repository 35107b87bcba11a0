"""Running workers: `strata worker` in the foreground, or the embedded one `strata serve` starts.

Concurrency is in processes (prefork): each process loads its own engine and answers one
document at a time, so N processes hold N copies of the model and split the machine's cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs.app import get_app
from strata.errors import ConfigError
from strata.settings import Settings, get_settings


def _use_model(model: Path | None) -> Path:
    if model is not None:
        os.environ["STRATA_MODEL"] = str(model)
        get_settings.cache_clear()
    chosen = get_settings().model
    if chosen is None or not (Path(chosen) / "config.json").is_file():
        raise ConfigError("a worker needs a model directory: --model DIR or STRATA_MODEL")
    return Path(chosen)


def worker_argv(concurrency: int, queue: str, loglevel: str = "INFO", name: str | None = None) -> list[str]:
    name = name or f"strata-{uuid.uuid4().hex[:8]}@%h"
    return ["worker", f"--concurrency={concurrency}", "--pool=prefork", f"--loglevel={loglevel}",
            f"--hostname={name}", f"--queues={queue}", "--without-gossip", "--without-mingle"]


def run_worker(model: Path | None, concurrency: int | None = None, loglevel: str = "INFO",
               name: str | None = None, parent_pid: int | None = None) -> None:
    """Run a Celery worker in this process until it is stopped."""
    _use_model(model)
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    settings = get_settings()
    n = concurrency or settings.jobs_concurrency
    if not settings.threads:
        # Each pool process runs its own engine: share the cores out instead of oversubscribing.
        os.environ["STRATA_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
        get_settings.cache_clear()
    get_app().worker_main(worker_argv(n, get_settings().jobs_queue, loglevel, name))


def spawn_worker(model: Path | None = None, concurrency: int | None = None,
                 env: dict[str, str] | None = None, log: Path | None = None,
                 parent_pid: int | None = None) -> subprocess.Popen[bytes]:
    """Start `strata worker` as a separate process (its own session, so it can be stopped whole)."""
    argv = [sys.executable, "-c", "from strata.cli import main; raise SystemExit(main())", "worker"]
    if model is not None:
        argv += ["--model", str(model)]
    if parent_pid is not None:
        argv += ["--parent-pid", str(parent_pid)]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    return subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


@contextmanager
def embedded_worker(settings: Settings) -> Iterator[subprocess.Popen[bytes] | None]:
    """For `strata serve`: without Redis, run one worker process beside the server while it runs.

    The worker is a separate process (its own engine, its own session) that also exits when the
    server dies without stopping it (--parent-pid).
    """
    if settings.redis_url or not settings.jobs_embedded or settings.model is None:
        yield None
        return
    env = {"STRATA_HOME": str(settings.home), "STRATA_WEIGHTS": settings.weights}
    log = settings.home / "jobs" / "embedded-worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = spawn_worker(Path(settings.model), env=env, log=log, parent_pid=os.getpid())
    try:
        yield proc
    finally:
        stop_worker(proc)


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the main process (Celery's warm shutdown: running tasks finish), then SIGKILL the
    whole group if it lingers. Never SIGTERM the pool directly: a killed pool process is a lost task."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def exit_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Warm-shut this worker down once `parent_pid` is no longer its parent."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="strata-parent-watch", daemon=True).start()
