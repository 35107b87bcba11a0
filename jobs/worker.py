"""Running workers: `strata worker` in the foreground, or the embedded one `strata serve` starts.

Concurrency is in processes (prefork): each process loads its own engine and answers one
document at a time, so N processes hold N copies of the model and split the machine's cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from jobs.app import QUEUE, get_app
from strata.errors import ConfigError
from strata.settings import get_settings


def _use_model(model: Path | None) -> Path:
    if model is not None:
        os.environ["STRATA_MODEL"] = str(model)
        get_settings.cache_clear()
    chosen = get_settings().model
    if chosen is None or not (Path(chosen) / "config.json").is_file():
        raise ConfigError("a worker needs a model directory: --model DIR or STRATA_MODEL")
    return Path(chosen)


def worker_argv(concurrency: int, loglevel: str = "INFO", name: str | None = None) -> list[str]:
    name = name or f"strata-{uuid.uuid4().hex[:8]}@%h"
    return ["worker", f"--concurrency={concurrency}", "--pool=prefork", f"--loglevel={loglevel}",
            f"--hostname={name}", f"--queues={QUEUE}", "--without-gossip", "--without-mingle"]


def run_worker(model: Path | None, concurrency: int | None = None, loglevel: str = "INFO",
               name: str | None = None) -> None:
    """Run a Celery worker in this process until it is stopped."""
    _use_model(model)
    settings = get_settings()
    n = concurrency or settings.jobs_concurrency
    if not settings.threads:
        # Each pool process runs its own engine: share the cores out instead of oversubscribing.
        os.environ["STRATA_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
        get_settings.cache_clear()
    get_app().worker_main(worker_argv(n, loglevel, name))


def spawn_worker(model: Path | None = None, concurrency: int | None = None,
                 env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `strata worker` as a separate process (its own session, so it can be stopped whole)."""
    argv = [sys.executable, "-c", "from strata.cli import main; raise SystemExit(main())", "worker"]
    if model is not None:
        argv += ["--model", str(model)]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    return subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def embedded_wanted() -> bool:
    """`strata serve` starts its own worker when there is no Redis (no shared broker to serve)."""
    return not get_settings().redis_url
