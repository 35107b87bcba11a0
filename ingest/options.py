"""IngestOptions: every limit and switch of one ingest, validated once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from strata.errors import BadRequest
from strata.settings import Settings, get_settings

KiB, MiB = 1 << 10, 1 << 20


@dataclass(slots=True)
class IngestOptions:
    """Limits and switches for one ingest; defaults suit a large repository plus some media."""

    include_vendored: bool = False
    include_generated: bool = False
    include_lockfiles: bool = False
    include_minified: bool = False
    max_file_bytes: int = 1 * MiB  # text files above this are skipped
    max_media_bytes: int = 512 * MiB  # PDFs / images / videos above this are skipped
    max_files: int = 200_000  # walk stops (with a warning) past this many entries
    # Media decoded per ingest: a repository's thousands of test-fixture images must not turn
    # into thousands of decodes; past the limit, media get a ledger entry and are not opened.
    max_media_files: int = 512
    max_tree_entries: int = 5_000  # tree listing lines before "... N more"
    # Images: a decoded size above this is a decompression bomb, refused before decoding.
    max_source_pixels: int = 64_000_000
    # PDFs: a page with fewer extractable characters than this is rendered as an image.
    pdf_min_text_chars: int = 32
    pdf_max_pages: int = 2_000
    pdf_render_dpi: int = 110
    # Video: frames sampled at `video_fps`, at most `video_max_frames`, each within this
    # pixel budget; gaps over `video_seek_gap_s` are seeked rather than decoded through.
    video_fps: float = 1.0
    video_max_frames: int = 64
    video_max_pixels: int = 448 * 448
    video_seek_gap_s: float = 4.0
    tree_first: bool = False  # tree listing before the files (worse prefix reuse, see docs)
    cache_dir: Path | None = None  # None: settings.home / "extracts"
    use_cache: bool = True
    cache_max_bytes: int = 32 << 30  # LMDB map size: past it, caching stops with a warning

    def __post_init__(self) -> None:
        for name in (
            "max_file_bytes",
            "max_media_bytes",
            "max_files",
            "max_media_files",
            "max_tree_entries",
            "max_source_pixels",
            "pdf_max_pages",
            "pdf_render_dpi",
            "video_max_frames",
            "video_max_pixels",
            "cache_max_bytes",
        ):
            if getattr(self, name) <= 0:
                raise BadRequest(f"ingest option {name} must be positive")
        if not 0 < self.video_fps <= 60:
            raise BadRequest("ingest option video_fps must be in (0, 60]")
        if self.pdf_min_text_chars < 0 or self.video_seek_gap_s < 0:
            raise BadRequest("ingest options must not be negative")

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: object) -> IngestOptions:
        """Options with the service's STRATA_INGEST_* limits, then explicit overrides."""
        s = settings or get_settings()
        limits = {
            "max_file_bytes": s.ingest_max_file_bytes,
            "max_media_bytes": s.ingest_max_media_bytes,
            "max_files": s.ingest_max_files,
            "max_source_pixels": s.ingest_max_source_pixels,
            "pdf_max_pages": s.ingest_pdf_max_pages,
            "video_max_frames": s.ingest_video_max_frames,
        }
        return cls(**{**limits, **overrides})  # type: ignore[arg-type]
