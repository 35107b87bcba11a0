"""Service settings: one pydantic-settings object, env prefix STRATA_, refusing unsafe values."""

from __future__ import annotations

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
    cache: bool = True

    # Sparse attention budget in tokens (0 = dense)
    attention_budget: int = 0

    redis_url: str | None = None

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
