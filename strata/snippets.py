"""Show a citation: the cited lines of a file, a rendered PDF page, a video frame, an image.

Everything is read from the stored upload, never from the prompt, so what the user sees is the
source itself. Each renderer is bounded (lines, pixels) and turns a damaged file into BadRequest.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from ingest.classify import SNIFF_BYTES, media_kind
from strata.errors import BadRequest

MAX_SNIPPET_LINES = 400
CONTEXT_LINES = 3
MAX_TEXT_BYTES = 16 << 20
PDF_DPI = 110
MAX_FRAME_SIDE = 1280


@dataclass(slots=True)
class Snippet:
    """Either text lines (`lines`, 1-based `first_line`) or an image (`data`, `media_type`)."""

    kind: str  # "text" | "pdf_page" | "frame" | "image"
    media_type: str
    data: bytes = b""
    lines: list[str] | None = None
    first_line: int = 1


def snippet(path: Path, line_start: int | None = None, line_end: int | None = None,
            page: int | None = None, time_s: float | None = None) -> Snippet:
    """The part of `path` a citation points at (the whole image, for images)."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    kind = media_kind(path.name, head)
    if kind == "pdf":
        return Snippet("pdf_page", "image/png", pdf_page_png(path, page or 1))
    if kind == "video":
        return Snippet("frame", "image/png", video_frame_png(path, time_s or 0.0))
    if kind == "image":
        return Snippet("image", _image_type(head), path.read_bytes())
    return text_lines(path, line_start or 1, line_end or line_start or 1)


def text_lines(path: Path, start: int, end: int) -> Snippet:
    """Lines start..end (1-based, inclusive) with a little context, at most MAX_SNIPPET_LINES."""
    if start < 1 or end < start:
        raise BadRequest("need 1 <= line_start <= line_end")
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise BadRequest(f"file too large to show (over {MAX_TEXT_BYTES} bytes)")
    text = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    first = max(1, start - CONTEXT_LINES)
    last = min(len(text), end + CONTEXT_LINES, first + MAX_SNIPPET_LINES - 1)
    return Snippet("text", "text/plain", lines=text[first - 1:last], first_line=first)


def pdf_page_png(path: Path, number: int) -> bytes:
    """Page `number` (1-based) rendered to PNG."""
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(str(path))
        try:
            if not 1 <= number <= len(doc):
                raise BadRequest(f"page {number} is outside the document (1..{len(doc)})")
            image = doc[number - 1].render(scale=PDF_DPI / 72).to_pil()
        finally:
            doc.close()
    except pdfium.PdfiumError as exc:
        raise BadRequest(f"cannot render the PDF: {exc}") from exc
    return _png(image)


def video_frame_png(path: Path, time_s: float) -> bytes:
    """The first frame at or after `time_s` seconds, as PNG."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise BadRequest("no video stream")
            stream = container.streams.video[0]
            base = stream.time_base
            if base is None:
                raise BadRequest("the video stream has no time base")
            start = float(stream.start_time * base) if stream.start_time else 0.0
            container.seek(int((start + max(time_s, 0.0)) / base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is None or frame.time >= start + time_s - 1e-3:
                    image = frame.to_image()
                    image.thumbnail((MAX_FRAME_SIDE, MAX_FRAME_SIDE))
                    return _png(image)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise BadRequest(f"cannot decode the video: {exc}") from exc
    raise BadRequest(f"no frame at {time_s:.2f}s")


def _png(image: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")  # type: ignore[attr-defined]
    return buf.getvalue()


def _image_type(head: bytes) -> str:
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF":
        return "image/webp"
    return "application/octet-stream"
