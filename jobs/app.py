"""The Celery app, configured from settings: Redis when STRATA_REDIS_URL is set, else files under home.

Without Redis the broker is kombu's filesystem transport and the result backend Celery's file
backend, both under STRATA_HOME/jobs: real Celery workers and messages, no server to run. Every
task acks late and is requeued when its worker process dies; see jobs.tasks for the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery

from strata.settings import Settings, get_settings


def jobs_root(settings: Settings) -> Path:
    return settings.home / "jobs"


def broker_config(settings: Settings) -> dict[str, Any]:
    """Broker and result backend: Redis, or the embedded file-based default."""
    if settings.redis_url:
        return {"broker_url": settings.redis_url, "result_backend": settings.redis_url,
                "broker_transport_options": {"visibility_timeout": settings.jobs_visibility_timeout_s}}
    root = jobs_root(settings) / "broker"
    folders = {name: root / name for name in ("queue", "control", "processed", "results")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    # store_processed with a folder on the same filesystem makes taking a message an atomic
    # rename: two workers can never both take it (the default moves it to /tmp, maybe a copy).
    transport = {"data_folder_in": str(folders["queue"]), "data_folder_out": str(folders["queue"]),
                 "control_folder": str(folders["control"]), "store_processed": True,
                 "processed_folder": str(folders["processed"]), "polling_interval": settings.jobs_poll_s}
    return {"broker_url": "filesystem://localhost//", "broker_transport_options": transport,
            "result_backend": f"file://{folders['results'].resolve()}"}


def make_app(settings: Settings) -> Celery:
    """A Celery app with Strata's tasks registered (the tasks run only in workers)."""
    app = Celery("strata")
    app.conf.update(
        **broker_config(settings),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a worker holds only the documents it is answering
        task_default_queue=settings.jobs_queue,  # deployments sharing a Redis keep their own queue
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    from jobs import tasks

    tasks.register(app)
    return app


_APPS: dict[tuple[str | None, Path], Celery] = {}


def get_app(settings: Settings | None = None) -> Celery:
    """The app for these settings (default: the process's); one per broker configuration per process."""
    settings = settings or get_settings()
    key = (settings.redis_url, settings.home)
    if key not in _APPS:
        _APPS[key] = make_app(settings)
    return _APPS[key]
