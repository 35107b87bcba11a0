"""Safe unpacking of uploaded archives (.zip, .tar, .tar.gz/.tgz).

Nothing is trusted: every entry name is checked before anything is written (no absolute paths,
no `..`, no drive letters), only regular files and directories are accepted (symlinks, hard
links and devices are refused), and the entry count and the bytes actually written are bounded,
so a zip bomb stops at the limit instead of filling the disk. A damaged archive is a BadRequest.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from strata.errors import BadRequest, PayloadTooLarge

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
COPY_CHUNK = 1 << 20


@dataclass(slots=True)
class UnpackLimits:
    """Bounds on what one document may unpack to."""

    max_entries: int = 100_000
    max_bytes: int = 4 << 30


@dataclass(slots=True)
class Budget:
    """What is left of the limits while unpacking; shared across a document's archives."""

    entries: int
    bytes: int

    @classmethod
    def of(cls, limits: UnpackLimits) -> Budget:
        return cls(limits.max_entries, limits.max_bytes)

    def take_entry(self) -> None:
        self.entries -= 1
        if self.entries < 0:
            raise PayloadTooLarge("the archive has too many entries (max_archive_entries)")

    def take_bytes(self, n: int) -> None:
        self.bytes -= n
        if self.bytes < 0:
            raise PayloadTooLarge("the archive unpacks to too many bytes (max_unpacked_bytes)")


def archive_kind(name: str) -> str | None:
    """'zip' or 'tar' by file name, or None for a plain file."""
    low = name.lower()
    if low.endswith(".zip"):
        return "zip"
    if low.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    return None


def archive_stem(name: str) -> str:
    """The name without its archive suffix: repo.tar.gz -> repo."""
    low = name.lower()
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path an entry may be written to; None for the root itself; BadRequest if hostile."""
    if "\x00" in name:
        raise BadRequest(f"archive entry {name!r} has a NUL byte in its name")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise BadRequest(f"archive entry {name!r} has an absolute path")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadRequest(f"archive entry {name!r} escapes the archive with '..'")
    return PurePosixPath(*parts) if parts else None


def unpack(archive: Path, kind: str, dest: Path, budget: Budget) -> None:
    """Unpack `archive` (zip or tar) into the empty directory `dest`, within `budget`."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            _unpack_zip(archive, dest, budget)
        else:
            _unpack_tar(archive, dest, budget)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise BadRequest(f"corrupt or unreadable {kind} archive '{archive.name}': {exc}") from exc


def _unpack_zip(archive: Path, dest: Path, budget: Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:  # check every entry before writing anything
            mode = info.external_attr >> 16
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise BadRequest(f"archive entry {info.filename!r} is a link or device, not a file")
            safe_member_path(info.filename)
            budget.take_entry()
        if sum(i.file_size for i in infos) > budget.bytes:
            raise PayloadTooLarge("the archive unpacks to too many bytes (max_unpacked_bytes)")
        for info in infos:
            rel = safe_member_path(info.filename)
            if rel is None:
                continue
            if info.is_dir():
                _directory(dest, rel)
            else:
                with zf.open(info) as src:
                    _write(src, _target(dest, rel), budget)


def _unpack_tar(archive: Path, dest: Path, budget: Budget) -> None:
    with tarfile.open(archive, mode="r:*") as tf:
        members = list(_tar_members(tf, budget))
        for member in members:
            rel = safe_member_path(member.name)
            if rel is None:
                continue
            if member.isdir():
                _directory(dest, rel)
                continue
            src = tf.extractfile(member)
            if src is None:
                raise BadRequest(f"archive entry {member.name!r} cannot be read")
            with src:
                _write(src, _target(dest, rel), budget)


def _tar_members(tf: tarfile.TarFile, budget: Budget) -> Iterator[tarfile.TarInfo]:
    declared = 0
    for member in tf:
        if not (member.isfile() or member.isdir()):
            what = "link" if (member.issym() or member.islnk()) else "device or special file"
            raise BadRequest(f"archive entry {member.name!r} is a {what}, not a file")
        safe_member_path(member.name)
        budget.take_entry()
        declared += member.size
        if declared > budget.bytes:
            raise PayloadTooLarge("the archive unpacks to too many bytes (max_unpacked_bytes)")
        yield member


def _directory(dest: Path, rel: PurePosixPath) -> None:
    path = dest.joinpath(*rel.parts)
    if path.exists() and not path.is_dir():
        raise BadRequest(f"archive entry {str(rel)!r} is both a file and a directory")
    path.mkdir(parents=True, exist_ok=True)


def _target(dest: Path, rel: PurePosixPath) -> Path:
    path = dest.joinpath(*rel.parts)
    for parent in reversed(path.relative_to(dest).parents):
        p = dest / parent
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            raise BadRequest(f"archive entry {str(rel)!r} goes through a file")
    if path.exists() or path.is_symlink():
        raise BadRequest(f"archive entry {str(rel)!r} appears twice")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write(src: IO[bytes], path: Path, budget: Budget) -> None:
    """Copy with the byte budget checked per chunk: a lying header cannot get past it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as out:
        while block := src.read(COPY_CHUNK):
            budget.take_bytes(len(block))
            out.write(block)


def copy_limited(src: IO[bytes], path: Path, limit: int) -> int:
    """Copy an upload to `path`, stopping with PayloadTooLarge as soon as it passes `limit` bytes."""
    total = 0
    with open(path, "xb") as out:
        while block := src.read(COPY_CHUNK):
            total += len(block)
            if total > limit:
                out.close()
                path.unlink(missing_ok=True)
                raise PayloadTooLarge(f"the upload is larger than {limit} bytes (max_upload_bytes)")
            out.write(block)
    return total


def remove_tree(path: Path) -> None:
    """Remove a directory tree (never following links out of it)."""
    shutil.rmtree(path, ignore_errors=True)
