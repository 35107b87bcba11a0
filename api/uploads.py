"""Multipart uploads read with the byte limit enforced as the body streams in.

Starlette's form parsing would read the whole body first; here the body is counted chunk by
chunk and reading stops as soon as it passes the limit (413), before anything is stored.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import BinaryIO

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from strata.errors import BadRequest, PayloadTooLarge, UnsupportedMedia

MULTIPART_OVERHEAD = 64 << 10  # boundaries and part headers on top of the files' bytes
MAX_PARTS = 1_000


async def _limited(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"the upload is larger than {limit} bytes (max_upload_bytes)")
        yield chunk


async def read_files(request: Request, max_bytes: int) -> list[tuple[str, BinaryIO]]:
    """The uploaded files of a multipart/form-data request, as (file name, stream) pairs."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise UnsupportedMedia("upload files as multipart/form-data (field 'file' or 'files')")
    limit = max_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the upload is larger than {max_bytes} bytes (max_upload_bytes)")
    parser = MultiPartParser(request.headers, _limited(request, limit), max_files=MAX_PARTS,
                             max_fields=MAX_PARTS)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(f"malformed multipart body: {exc.message}") from exc
    files = [(v.filename or "", v.file) for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise BadRequest("no file in the upload (send multipart/form-data with a 'file' field)")
    return files
