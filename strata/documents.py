"""Uploaded documents: stored per tenant, unpacked safely, ingested into prompts on demand.

Layout: root/<tenant>/<id>/meta.json and ledger.json (each written atomically) and files/, which
holds each uploaded file under its own name and each archive unpacked under its stem (or under
its single top-level directory). A citation's path is a path relative to files/, so the stored
upload can always be shown back to the user. Another tenant's id is simply not found.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from ingest import IngestOptions, Prompt, Target, build_prompt
from strata.archives import (
    Budget,
    UnpackLimits,
    archive_kind,
    archive_stem,
    copy_limited,
    remove_tree,
    safe_member_path,
    unpack,
)
from strata.errors import BadRequest, IngestError, NotFound

PROCESSING, READY, FAILED = "processing", "ready", "failed"
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ID_RE = re.compile(r"^doc_[0-9a-f]{24}$")
MAX_NAME_CHARS = 255
PROMPT_CACHE_SIZE = 4  # packed prompts kept in memory (a 1M-token prompt is tens of MB)


@dataclass(slots=True)
class UploadLimits:
    """Bounds checked where an upload enters."""

    max_upload_bytes: int = 1 << 30
    unpack: UnpackLimits = field(default_factory=UnpackLimits)


@dataclass(slots=True)
class Document:
    """One upload and what ingest made of it."""

    id: str
    tenant: str
    name: str
    status: str
    created_at: float
    bytes: int
    sources: list[str]
    tokens: int = 0
    items: int = 0
    error: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    ledger: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, ledger: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not ledger:
            out.pop("ledger")
        return out


def check_tenant(tenant: str) -> str:
    """Tenant names become directory names: refuse anything but a plain identifier."""
    if not TENANT_RE.match(tenant):
        raise BadRequest(f"invalid tenant name {tenant!r}")
    return tenant


def upload_name(raw: str | None) -> str:
    """The base name of a client-supplied file name, refused if empty or hostile."""
    name = PurePosixPath((raw or "").replace("\\", "/")).name
    if not name or name in (".", "..") or "\x00" in name or len(name) > MAX_NAME_CHARS:
        raise BadRequest(f"invalid upload file name {raw!r}")
    return name


class DocumentStore:
    """Documents under `root` (settings.home / "uploads"), one directory per tenant."""

    def __init__(self, root: Path, limits: UploadLimits | None = None,
                 extract_cache: Path | None = None) -> None:
        self.root = Path(root)
        self.limits = limits or UploadLimits()
        self.extract_cache = extract_cache
        self._lock = threading.Lock()
        self._prompts: OrderedDict[tuple[str, str, str, int], Prompt] = OrderedDict()

    # -- create ---------------------------------------------------------------------------------
    def create(self, tenant: str, files: Sequence[tuple[str, BinaryIO]]) -> Document:
        """Store uploads (plain files and/or archives) as one document, status "processing".

        Each upload is copied with the byte limit enforced as it streams; archives are unpacked
        within the entry and size limits. On any error nothing is left behind.
        """
        check_tenant(tenant)
        if not files:
            raise BadRequest("no file uploaded")
        doc_id = f"doc_{secrets.token_hex(12)}"
        home = self._dir(tenant, doc_id)
        home.mkdir(parents=True)
        try:
            sources, size = self._store_all(files, home)
        except BaseException:
            remove_tree(home)
            raise
        names = [upload_name(n) for n, _ in files]
        doc = Document(doc_id, tenant, names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1})",
                       PROCESSING, time.time(), size, sources)
        self._save(doc)
        return doc

    def _store_all(self, files: Sequence[tuple[str, BinaryIO]], home: Path) -> tuple[list[str], int]:
        out, incoming, staging = home / "files", home / "incoming", home / "staging"
        for d in (out, incoming, staging):
            d.mkdir()
        left, budget = self.limits.max_upload_bytes, Budget.of(self.limits.unpack)
        sources: list[str] = []
        for raw_name, stream in files:
            name = upload_name(raw_name)
            kind = archive_kind(name)
            raw = incoming / name
            if raw.exists():
                raise BadRequest(f"two uploads are named {name!r}")
            left -= copy_limited(stream, raw, left)
            if kind is None:
                budget.take_entry()
                budget.take_bytes(raw.stat().st_size)
                sources.append(self._place(raw, out / name))
                continue
            unpacked = staging / name
            unpack(raw, kind, unpacked, budget)
            raw.unlink()
            sources.append(self._place_archive(unpacked, out, archive_stem(name)))
        remove_tree(incoming)
        remove_tree(staging)
        return sources, self.limits.max_upload_bytes - left

    @staticmethod
    def _place(src: Path, dest: Path) -> str:
        if dest.exists():
            raise BadRequest(f"two uploads would be stored as {dest.name!r}")
        os.replace(src, dest)
        return dest.name

    def _place_archive(self, unpacked: Path, out: Path, stem: str) -> str:
        entries = list(unpacked.iterdir())
        if not entries:
            raise BadRequest(f"the archive '{stem}' is empty")
        if len(entries) == 1 and entries[0].is_dir():  # repo.zip holding repo/...: keep its name
            return self._place(entries[0], out / entries[0].name)
        return self._place(unpacked, out / stem)

    # -- read -----------------------------------------------------------------------------------
    def get(self, tenant: str, doc_id: str, ledger: bool = False) -> Document:
        """The document `doc_id` of `tenant`; NotFound for an unknown id or another tenant's.

        The ledger (one entry per input file, large for a big repository) is kept in its own
        file and read only when asked for.
        """
        home = self._dir(tenant, doc_id)
        try:
            doc = Document(**json.loads((home / "meta.json").read_text()))
            if ledger and doc.status != PROCESSING and (home / "ledger.json").exists():
                doc.ledger = json.loads((home / "ledger.json").read_text())
        except (OSError, ValueError):
            raise NotFound(f"no document '{doc_id}'") from None
        return doc

    def list(self, tenant: str) -> list[Document]:
        """The tenant's documents, oldest first."""
        base = self.root / check_tenant(tenant)
        docs = []
        for child in sorted(base.iterdir()) if base.is_dir() else []:
            if ID_RE.match(child.name):
                try:
                    docs.append(self.get(tenant, child.name))
                except NotFound:
                    continue  # being created or deleted
        return sorted(docs, key=lambda d: (d.created_at, d.id))

    def delete(self, tenant: str, doc_id: str) -> None:
        """Remove the document and its files."""
        self.get(tenant, doc_id)
        home = self._dir(tenant, doc_id)
        # Rename first so a concurrent reader sees it gone at once, then remove.
        grave = home.with_name(f".deleted-{doc_id}-{secrets.token_hex(4)}")
        os.replace(home, grave)
        remove_tree(grave)
        with self._lock:
            for key in [k for k in self._prompts if k[:2] == (tenant, doc_id)]:
                del self._prompts[key]

    def files_dir(self, tenant: str, doc_id: str) -> Path:
        """Where the document's unpacked files are."""
        self.get(tenant, doc_id)
        return self._dir(tenant, doc_id) / "files"

    def source_file(self, tenant: str, doc_id: str, rel: str) -> Path:
        """The stored file a citation path names; NotFound if it is not inside the document."""
        base = self.files_dir(tenant, doc_id).resolve()
        try:
            parts = safe_parts(rel)
        except BadRequest:
            raise NotFound(f"no file {rel!r} in document '{doc_id}'") from None
        path = base.joinpath(*parts)
        resolved = path.resolve()
        if path.is_symlink() or not resolved.is_relative_to(base) or not resolved.is_file():
            raise NotFound(f"no file {rel!r} in document '{doc_id}'")
        return resolved

    # -- ingest ---------------------------------------------------------------------------------
    def prompt(self, tenant: str, doc_id: str, target: Target, budget: int,
               options: IngestOptions | None = None) -> Prompt:
        """The document's material packed into `budget` tokens (cached in memory and on disk)."""
        doc = self.get(tenant, doc_id)
        if doc.status == FAILED:
            raise BadRequest(f"document '{doc_id}' failed to ingest: {doc.error}")
        key = (tenant, doc_id, target.fingerprint, budget)
        with self._lock:
            if key in self._prompts:
                self._prompts.move_to_end(key)
                return self._prompts[key]
        files = self._dir(tenant, doc_id) / "files"
        opts = options or IngestOptions(cache_dir=self.extract_cache)
        prompt = build_prompt([files / s for s in doc.sources], target, budget, opts)
        with self._lock:
            self._prompts[key] = prompt
            while len(self._prompts) > PROMPT_CACHE_SIZE:
                self._prompts.popitem(last=False)
        return prompt

    def ingest(self, tenant: str, doc_id: str, target: Target, budget: int) -> Document:
        """Build the prompt once and record its size and ledger: "ready", or "failed" and raise."""
        try:
            prompt = self.prompt(tenant, doc_id, target, budget)
            if prompt.ledger and all(item.status == "error" for item in prompt.ledger):
                raise IngestError("nothing could be ingested: " + "; ".join(
                    f"{i.path}: {i.reason}" for i in prompt.ledger[:5]))
        except NotFound:
            raise
        except Exception as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            self._update(tenant, doc_id, status=FAILED, error=message)
            raise
        home = self._dir(tenant, doc_id)
        _write_json(home, "ledger.json", [i.to_dict() for i in prompt.ledger])
        return self._update(tenant, doc_id, status=READY, tokens=len(prompt), items=len(prompt.ledger),
                            summary=prompt.summary())

    # -- storage --------------------------------------------------------------------------------
    def _dir(self, tenant: str, doc_id: str) -> Path:
        if not ID_RE.match(doc_id):
            raise NotFound(f"no document '{doc_id}'")
        return self.root / check_tenant(tenant) / doc_id

    def _update(self, tenant: str, doc_id: str, **changes: Any) -> Document:
        with self._lock:
            doc = self.get(tenant, doc_id)
            for name, value in changes.items():
                setattr(doc, name, value)
            self._save(doc)
        return doc

    def _save(self, doc: Document) -> None:
        _write_json(self._dir(doc.tenant, doc.id), "meta.json", doc.to_dict())


def _write_json(home: Path, name: str, obj: Any) -> None:
    """Write home/name atomically: a temporary file in the same directory, fsync, then rename."""
    fd, tmp = tempfile.mkstemp(dir=home, prefix=f".{name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, home / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_parts(rel: str) -> tuple[str, ...]:
    """Components of a relative path, refusing absolute paths and '..'."""
    path = safe_member_path(rel)
    if path is None:
        raise BadRequest("empty path")
    return path.parts
