"""Service settings: one pydantic-settings object, env prefix STRATA_, refusing unsafe values."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GiB = 1 << 30


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRATA_", extra="ignore")

    home: Path = Field(default=Path.home() / ".strata",
                      description="Data root: lmdb/, uploads/, extracts/, jobs/")
    model: Path | None = None

    # Runtime
    weights: str = "auto"
    kv_dtype: str = "auto"
    page_size: int = 64
    prefill_chunk: int = 512
    threads: int = 0

    # KV tiers (bytes)
    kv_device_bytes: int = 1 * GiB
    kv_host_bytes: int = 4 * GiB
    kv_disk_bytes: int = 64 * GiB
    kv_redis_url: str | None = None
    kv_redis_ttl_s: int | None = None  # pages in the shared Redis expire after this (None: never)
    kv_redis_max_bytes: int | None = None  # Strata's own LRU budget in Redis (None: server's)
    kv_write_queue: int = 1024  # pages waiting per persistent tier before new ones are skipped
    cache: bool = True

    # Sparse attention budget in tokens (0 = dense)
    attention_budget: int = 0

    redis_url: str | None = None

    # Ingest limits (defaults of ingest.IngestOptions.from_settings; the CLI flags override them)
    ingest_max_file_bytes: int = Field(default=1 << 20, gt=0)  # text files above this are skipped
    ingest_max_media_bytes: int = Field(default=512 << 20, gt=0)  # PDFs / images / videos above this
    ingest_max_files: int = Field(default=200_000, gt=0)  # per directory source
    ingest_max_source_pixels: int = Field(default=64_000_000, gt=0)  # decoded image size (bomb guard)
    ingest_pdf_max_pages: int = Field(default=2_000, gt=0)
    ingest_video_max_frames: int = Field(default=64, gt=0)

    # Jobs (Celery): redis_url set -> Redis broker and result backend; unset -> files under home/jobs
    jobs_lease_s: float = Field(default=60.0, gt=0)  # a document task silent this long is presumed dead
    jobs_sweep_s: float = Field(default=15.0, gt=0)  # how often a worker looks for dead document tasks
    jobs_max_retries: int = Field(default=5, ge=0)  # retries of a document task after a transient error
    jobs_max_crashes: int = Field(default=3, gt=0)  # a document whose process died this often fails its rest
    jobs_retry_backoff_s: float = Field(default=2.0, ge=0)  # first retry delay; doubles per retry
    jobs_retry_backoff_max_s: float = Field(default=60.0, ge=0)
    jobs_visibility_timeout_s: int = Field(default=3600, gt=0)  # Redis: unacked message redelivery
    jobs_poll_s: float = Field(default=0.2, gt=0)  # embedded broker: queue polling interval
    jobs_max_documents: int = Field(default=10_000, gt=0)
    jobs_max_questions: int = Field(default=200, gt=0)
    jobs_max_new_tokens: int = Field(default=512, gt=0)
    jobs_concurrency: int = Field(default=1, gt=0)  # worker processes, one engine each
    jobs_queue: str = Field(default="strata-jobs", pattern=r"^[A-Za-z0-9_.-]{1,100}$")  # one per deployment
    jobs_embedded: bool = True  # `strata serve` without Redis starts its own worker process
    jobs_allow_local_sources: bool = False  # POST /v1/jobs may name server-side paths (trusted setups only)

    # HTTP API (strata serve). auth "keys": Authorization: Bearer <key> -> tenant via api_keys
    # (STRATA_API_KEYS='{"key": "tenant"}'); "none": one local tenant, refused unless on loopback.
    auth: str = "keys"
    api_keys: dict[str, str] = Field(default_factory=dict)
    local_tenant: str = "local"
    max_upload_bytes: int = Field(default=1 * GiB, gt=0)  # per upload request, counted as it streams
    max_request_bytes: int = Field(default=4 << 20, gt=0)  # any other request body (JSON)
    max_archive_entries: int = Field(default=100_000, gt=0)  # per document, all archives together
    max_unpacked_bytes: int = Field(default=4 * GiB, gt=0)  # per document, all archives together
    upload_sync_bytes: int = Field(default=8 << 20, ge=0)  # larger uploads ingest in the background
    max_tokens_per_request: int = Field(default=1024, gt=0)  # max_tokens a client may ask for
    queue_depth: int = Field(default=64, gt=0)  # requests admitted (running + waiting); beyond: 429
    request_timeout_s: float = Field(default=300.0, gt=0)  # queueing plus generation, per request

    @field_validator("auth")
    @classmethod
    def _auth(cls, v: str) -> str:
        if v not in ("keys", "none"):
            raise ValueError("auth must be 'keys' or 'none'")
        return v

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key, tenant in v.items():
            if len(key) < 16:
                raise ValueError("API keys must be at least 16 characters")
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", tenant):
                raise ValueError(f"invalid tenant name {tenant!r}")
        return v

    @field_validator("page_size")
    @classmethod
    def _page_size(cls, v: int) -> int:
        if v < 8 or v > 4096 or v & (v - 1):
            raise ValueError("page_size must be a power of two between 8 and 4096")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str) -> str:
        if v not in ("auto", "fp8", "bf16", "fp32"):
            raise ValueError("weights must be one of auto, fp8, bf16, fp32")
        return v

    @field_validator("kv_dtype")
    @classmethod
    def _kv_dtype(cls, v: str) -> str:
        if v not in ("auto", "fp8", "bf16", "fp32"):
            raise ValueError("kv_dtype must be one of auto, fp8, bf16, fp32")
        return v

    @field_validator("kv_device_bytes", "kv_host_bytes", "kv_disk_bytes", "attention_budget", "prefill_chunk")
    @classmethod
    def _non_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must not be negative")
        return v

    @field_validator("kv_redis_ttl_s", "kv_redis_max_bytes", "kv_write_queue")
    @classmethod
    def _positive_or_none(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("must be positive")
        return v


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
