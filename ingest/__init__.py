"""Turn repositories, PDFs, images and video into one budgeted, deterministic multimodal prompt."""

from ingest.build import build_prompt, default_budget
from ingest.options import IngestOptions
from ingest.prompt import LedgerItem, MediaSpan, Prompt, SourceSpan
from ingest.target import Target

__all__ = [
    "IngestOptions",
    "LedgerItem",
    "MediaSpan",
    "Prompt",
    "SourceSpan",
    "Target",
    "build_prompt",
    "default_budget",
]
