"""/v1/documents: upload, list, status, delete, ask, and the cited source of a citation."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import Services, ServicesDep, TenantDep
from api.generation import ask_job, record, start
from api.schemas import AskBody
from api.sse import SSE_HEADERS, ask_events
from api.uploads import read_files
from strata.ask import AskResult
from strata.documents import Document
from strata.errors import StrataError
from strata.snippets import snippet

log = logging.getLogger("strata.api")
router = APIRouter(prefix="/v1/documents", tags=["documents"])


def _public(doc: Document, ledger: bool = False) -> dict[str, Any]:
    body = doc.to_dict(ledger)
    body.pop("tenant")
    return body


def _ingest_in_background(services: Services, doc: Document) -> None:
    def run() -> None:
        try:
            services.store.ingest(doc.tenant, doc.id, services.target, services.budget)
        except StrataError as exc:
            log.info("document %s failed to ingest: %s", doc.id, exc.message)
        except Exception:
            log.exception("document %s failed to ingest", doc.id)

    services.ingest_pool.submit(run)


@router.post("", status_code=201)
async def upload(request: Request, services: ServicesDep, tenant: TenantDep) -> JSONResponse:
    """Store one or more files or an archive; small uploads are ingested before answering."""
    files = await read_files(request, services.settings.max_upload_bytes)
    try:
        doc = await run_in_threadpool(services.store.create, tenant, files)
    finally:
        for _, stream in files:
            stream.close()
    if doc.bytes > services.settings.upload_sync_bytes:
        _ingest_in_background(services, doc)
        return JSONResponse(_public(doc), status_code=202)
    doc = await run_in_threadpool(services.store.ingest, tenant, doc.id, services.target, services.budget)
    return JSONResponse(_public(doc), status_code=201)


@router.get("")
def list_documents(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return {"object": "list", "data": [_public(d) for d in services.store.list(tenant)]}


@router.get("/{doc_id}")
def get_document(doc_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Status, size and the ingest ledger (what was included, outlined, dropped, and why)."""
    return _public(services.store.get(tenant, doc_id, ledger=True), ledger=True)


@router.delete("/{doc_id}")
def delete_document(doc_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    services.store.delete(tenant, doc_id)
    return {"id": doc_id, "deleted": True}


@router.post("/{doc_id}/ask", response_model=None)
async def ask(doc_id: str, body: AskBody, services: ServicesDep,
              tenant: TenantDep) -> StreamingResponse | dict[str, Any]:
    """Answer a question about the document: JSON, or SSE deltas ending with the usage."""
    services.store.get(tenant, doc_id)
    events = await start(services, ask_job(services, tenant, doc_id, body))
    if body.stream:
        return StreamingResponse(ask_events(services, events), media_type="text/event-stream",
                                 headers=SSE_HEADERS)
    result = None
    try:
        async for item in events:
            if isinstance(item, AskResult):
                result = item
    finally:
        await events.aclose()
    assert result is not None
    record(services, result)
    return result.to_dict()


@router.get("/{doc_id}/source")
def source(doc_id: str, path: str, services: ServicesDep, tenant: TenantDep,
           line_start: int | None = None, line_end: int | None = None, page: int | None = None,
           time_s: float | None = None) -> Response:
    """What a citation points at, from the stored upload: lines (JSON), a PDF page or a frame (PNG)."""
    file = services.store.source_file(tenant, doc_id, path)
    shown = snippet(file, line_start, line_end, page, time_s)
    if shown.lines is not None:
        return JSONResponse({"path": path, "kind": shown.kind, "first_line": shown.first_line,
                             "lines": shown.lines})
    return Response(shown.data, media_type=shown.media_type,
                    headers={"Cache-Control": "private, max-age=3600"})
