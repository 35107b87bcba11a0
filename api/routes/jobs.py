"""/v1/jobs: submit a batch of questions over documents, watch it, fetch its results, cancel it.

Thin handlers: the work is in jobs.service, which the CLI calls too. The jobs run on Celery
workers (the embedded one `strata serve` starts, or `strata worker`s on Redis), never here.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import TenantDep
from strata.errors import BadRequest
from strata.settings import Settings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


class JobBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[str] = Field(default_factory=list, description="stored document ids")
    sources: list[str] = Field(default_factory=list, description="server-side paths (if allowed)")
    questions: list[str] | None = None
    template: str | None = None
    max_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    citations: int = Field(default=5, ge=0, le=50)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.post("", status_code=202)
async def create(body: JobBody, request: Request, tenant: TenantDep) -> JSONResponse:
    """Queue the job; 202 with its id and initial status."""
    from jobs.service import status, submit
    from jobs.spec import make_spec

    settings = _settings(request)
    if body.sources and not settings.jobs_allow_local_sources:
        raise BadRequest("server-side source paths are off (STRATA_JOBS_ALLOW_LOCAL_SOURCES); "
                         "upload the material and pass document ids")
    spec = make_spec(body.sources, body.documents, body.questions, body.template, tenant=tenant,
                     max_new_tokens=body.max_tokens, temperature=body.temperature, max_citations=body.citations)
    job_id = await run_in_threadpool(submit, spec, settings)
    return JSONResponse(await run_in_threadpool(status, job_id, tenant, settings), status_code=202)


@router.get("/{job_id}")
async def get(job_id: str, request: Request, tenant: TenantDep) -> dict[str, Any]:
    """State (queued | running | done | cancelled), done/total, failures, each document task's state."""
    from jobs.service import status

    return await run_in_threadpool(status, job_id, tenant, _settings(request))


@router.get("/{job_id}/results", response_model=None)
async def results(job_id: str, request: Request, tenant: TenantDep,
                  format: Literal["json", "jsonl", "md"] = "json") -> Response | dict[str, Any]:
    """Results so far, one per (document, question): JSON, JSON lines or Markdown."""
    import json

    from jobs.service import results as job_results
    from jobs.service import results_markdown, status

    settings = _settings(request)
    items = await run_in_threadpool(job_results, job_id, tenant, settings)
    if format == "md":
        return PlainTextResponse(results_markdown(items), media_type="text/markdown")
    if format == "jsonl":
        lines = "".join(json.dumps(i, default=str) + "\n" for i in items)
        return PlainTextResponse(lines, media_type="application/x-ndjson")
    state = await run_in_threadpool(status, job_id, tenant, settings, False)
    return {"id": job_id, "state": state["state"], "done": state["done"], "total": state["total"],
            "data": items}


@router.delete("/{job_id}")
async def delete(job_id: str, request: Request, tenant: TenantDep) -> dict[str, Any]:
    """Cancel the job; results so far stay retrievable."""
    from jobs.service import cancel

    return await run_in_threadpool(cancel, job_id, tenant, _settings(request))
