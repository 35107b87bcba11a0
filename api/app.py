"""The FastAPI app: create_app(settings, engine_factory) wires services, routers and errors.

Routers live in their own modules; another resource (e.g. /v1/jobs) is one include_router line.
The engine is loaded in the lifespan (in a thread); the server listens once it is ready.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.deps import Services, material_budget
from api.errors import install_error_handlers
from api.limits import BodyLimit
from api.metrics import Metrics
from api.routes import documents, jobs, openai, system
from api.routes.system import STATIC
from api.worker import EngineWorker
from ingest import Target
from runtime import Engine
from strata.archives import UnpackLimits
from strata.documents import DocumentStore, UploadLimits
from strata.errors import ConfigError
from strata.settings import Settings, get_settings

EngineFactory = Callable[[Settings], Engine]


def load_engine(settings: Settings) -> Engine:
    """The default engine: settings.model with settings.weights."""
    if settings.model is None:
        raise ConfigError("no model: pass --model DIR or set STRATA_MODEL")
    return Engine.from_pretrained(settings.model, weights=settings.weights)


def build_services(settings: Settings, engine: Engine, metrics: Metrics) -> Services:
    """Everything requests use, around one loaded engine."""
    if engine.path is None:
        raise ConfigError("the engine must be loaded from a checkpoint directory")
    limits = UploadLimits(settings.max_upload_bytes,
                          UnpackLimits(settings.max_archive_entries, settings.max_unpacked_bytes))
    store = DocumentStore(settings.home / "uploads", limits, settings.home / "extracts")
    worker = EngineWorker(engine, settings.queue_depth, settings.request_timeout_s)
    metrics.watch(engine.kv_stats, lambda: worker.admitted, lambda: worker.stopped)
    return Services(settings, store, worker, Target.from_model_dir(engine.path), metrics,
                    engine.path.name, material_budget(engine.config.max_position_embeddings, settings),
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix="strata-ingest"))


class RequestMetrics:
    """Counts every response by method, route template and status (pure ASGI: streams untouched)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status["code"])).inc()


def create_app(settings: Settings | None = None, engine_factory: EngineFactory = load_engine) -> FastAPI:
    """The app; the engine is built by `engine_factory(settings)` when the app starts."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = await asyncio.to_thread(engine_factory, settings)
        services = build_services(settings, engine, metrics)
        app.state.services = services
        try:
            yield
        finally:
            app.state.services = None
            services.worker.close()
            services.ingest_pool.shutdown(wait=False, cancel_futures=True)
            engine.close()

    app = FastAPI(title="Strata", version="0.1.0", lifespan=lifespan)
    app.state.settings, app.state.metrics, app.state.services = settings, metrics, None
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(documents.router)
    app.include_router(openai.router)
    app.include_router(jobs.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
