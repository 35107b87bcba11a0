"""PDFs: text per page in reading order, and a rendering of pages whose text layer is poor.

A scanned page or a full-page figure has few or no extractable characters: it is rendered and
goes into the prompt as an image (when the model has vision input and the budget allows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from ingest.images import fit_pixels
from ingest.options import IngestOptions
from strata.errors import IngestError

# A page whose images cover more than this share of its area, with little text, is a figure.
FIGURE_AREA_SHARE = 0.5
FIGURE_MAX_CHARS = 400


@dataclass(slots=True)
class PdfPage:
    """One page: its text (may be empty) and, for poor text layers, fitted pixels."""

    number: int  # 1-based
    text: str
    pixels: np.ndarray | None = None
    reason: str = ""  # why it was rendered


@dataclass(slots=True)
class PdfExtract:
    """The pages of one PDF, its page count and what went wrong on the way."""

    pages: list[PdfPage] = field(default_factory=list)
    page_count: int = 0
    warnings: list[str] = field(default_factory=list)


def extract_pdf(path: Path, opts: IngestOptions, patch: int | None, min_px: int, max_px: int) -> PdfExtract:
    """Text of every page; pixels of poor-text pages when `patch` is set (vision targets)."""
    try:
        doc = pdfium.PdfDocument(str(path))
    except (pdfium.PdfiumError, OSError, ValueError) as exc:
        raise IngestError(f"cannot open PDF: {exc}") from exc
    out = PdfExtract()
    try:
        out.page_count = len(doc)
        if out.page_count > opts.pdf_max_pages:
            out.warnings.append(f"only the first {opts.pdf_max_pages} of {out.page_count} pages")
        for index in range(min(out.page_count, opts.pdf_max_pages)):
            try:
                out.pages.append(_page(doc, index, opts, patch, min_px, max_px))
            except (pdfium.PdfiumError, OSError, ValueError) as exc:
                out.warnings.append(f"page {index + 1}: {exc}")
    finally:
        doc.close()
    if not out.pages and out.page_count:
        raise IngestError(f"no readable page among {out.page_count}")
    return out


def _page(
    doc: pdfium.PdfDocument, index: int, opts: IngestOptions, patch: int | None, min_px: int, max_px: int
) -> PdfPage:
    page = doc[index]
    try:
        textpage = page.get_textpage()
        try:
            text = textpage.get_text_range().replace("\r\n", "\n").replace("\r", "\n")
        finally:
            textpage.close()
        reason = _render_reason(page, text, opts)
        pixels = None
        if reason and patch is not None:
            pixels = _render(page, opts, patch, min_px, max_px)
        return PdfPage(index + 1, text.strip(), pixels, reason)
    finally:
        page.close()


def _render_reason(page: pdfium.PdfPage, text: str, opts: IngestOptions) -> str:
    visible = sum(1 for ch in text if not ch.isspace())
    if visible < opts.pdf_min_text_chars:
        return "no text layer" if visible == 0 else f"poor text layer ({visible} characters)"
    garbage = sum(1 for ch in text if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\n\t"))
    if garbage * 10 > visible * 3:
        return "garbled text layer"
    if visible < FIGURE_MAX_CHARS and _image_share(page) > FIGURE_AREA_SHARE:
        return "figure page"
    return ""


def _image_share(page: pdfium.PdfPage) -> float:
    width, height = page.get_size()
    covered = 0.0
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=2):
        left, bottom, right, top = obj.get_pos()
        covered += max(0.0, right - left) * max(0.0, top - bottom)
    return covered / max(width * height, 1.0)


def _render(page: pdfium.PdfPage, opts: IngestOptions, patch: int, min_px: int, max_px: int) -> np.ndarray:
    width, height = page.get_size()  # points
    # Render near the final pixel budget: never far more pixels than the grid can keep.
    scale = min(opts.pdf_render_dpi / 72, math.sqrt(2 * max_px / max(width * height, 1.0)))
    bitmap = page.render(scale=scale, fill_color=(255, 255, 255, 255))
    image = bitmap.to_pil().convert("RGB")
    return fit_pixels(image, patch, min_px, max_px)
