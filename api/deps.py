"""What handlers depend on: the app's services and the caller's tenant (typed FastAPI dependencies)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from api.auth import tenant_for
from api.metrics import Metrics
from api.worker import EngineWorker
from ingest import Target
from strata.cli.ask import material_budget as cli_material_budget
from strata.documents import DocumentStore
from strata.errors import StrataError
from strata.settings import Settings


class NotReady(StrataError):
    status = 503
    type = "not_ready"


@dataclass(slots=True)
class Services:
    """Everything a request may use; built once when the app starts."""

    settings: Settings
    store: DocumentStore
    worker: EngineWorker
    target: Target
    metrics: Metrics
    model_id: str
    budget: int  # tokens of material per request (fixed, so repeated asks share their prefix)
    ingest_pool: ThreadPoolExecutor


def material_budget(context: int, settings: Settings) -> int:
    """The context (up to 1M) less room for the longest answer allowed and the question.

    The same formula as `strata ask` and the jobs, so all of them pack, and cache, the same prompt.
    """
    budget = cli_material_budget(context, settings.max_tokens_per_request, None)
    if budget <= 0:
        raise StrataError(f"max_tokens_per_request {settings.max_tokens_per_request} leaves no room for "
                          f"material in a context of {context} tokens")
    return budget


def get_services(request: Request) -> Services:
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise NotReady("the model is still loading")
    return services


def get_tenant(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    return tenant_for(request.app.state.settings, authorization)


ServicesDep = Annotated[Services, Depends(get_services)]
TenantDep = Annotated[str, Depends(get_tenant)]
