"""Decide what a file is (text, binary, PDF, image, video) and whether it is skipped by default.

Content decides, not only the name: a PNG renamed .txt is binary, and random bytes named .png
go to the image decoder, which reports them as broken rather than silently skipping them.
"""

from __future__ import annotations

import os
import re

from ingest.options import IngestOptions

SNIFF_BYTES = 8192

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".tif", ".tiff", ".bmp"}
PDF_EXT = {".pdf"}
VIDEO_EXT = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"}

# Directory names whose content is third-party or build output.
VENDORED_DIRS = {
    "node_modules",
    "vendor",
    "vendors",
    "third_party",
    "third-party",
    "thirdparty",
    "bower_components",
    "jspm_packages",
    ".venv",
    "venv",
    "site-packages",
    "__pycache__",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".gradle",
    ".idea",
    "Pods",
    "Carthage",
    ".yarn",
    ".pnpm-store",
}
GENERATED_DIRS = {"dist", "build", "out", "target", ".next", ".nuxt", "coverage", "htmlcov"}
LOCKFILES = {
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "bun.lockb",
    "poetry.lock",
    "Pipfile.lock",
    "uv.lock",
    "pdm.lock",
    "Cargo.lock",
    "Gemfile.lock",
    "composer.lock",
    "go.sum",
    "mix.lock",
    "flake.lock",
    "packages.lock.json",
    "pubspec.lock",
    "Podfile.lock",
    "gradle.lockfile",
}
GENERATED_SUFFIXES = (
    "_pb2.py",
    "_pb2_grpc.py",
    ".pb.go",
    ".pb.cc",
    ".pb.h",
    ".g.dart",
    ".generated.ts",
    ".designer.cs",
    ".min.js",
    ".min.css",
    ".js.map",
    ".css.map",
    ".min.mjs",
)
_GENERATED_MARK = re.compile(
    rb"@generated|code generated .{0,60}do not edit|auto-?generated|do not edit[^\n]{0,20}generated",
    re.IGNORECASE,
)
# Bytes that never appear in text, apart from NUL which is checked on its own.
_CONTROL = bytes(range(0, 9)) + bytes([11, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 28, 29, 30, 31, 127])


def media_kind(path: str, head: bytes) -> str | None:
    """'pdf' | 'image' | 'video' by extension or magic bytes, else None."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in PDF_EXT or head.startswith(b"%PDF-"):
        return "pdf"
    if suffix in IMAGE_EXT or _image_magic(head):
        return "image"
    if suffix in VIDEO_EXT or _video_magic(head):
        return "video"
    return None


def _image_magic(head: bytes) -> bool:
    return (
        head.startswith(b"\x89PNG\r\n\x1a\n")
        or head.startswith(b"\xff\xd8\xff")
        or head[:6] in (b"GIF87a", b"GIF89a")
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or head[:4] in (b"II*\x00", b"MM\x00*")
    )


def _video_magic(head: bytes) -> bool:
    return (
        head[4:8] == b"ftyp" or head.startswith(b"\x1a\x45\xdf\xa3") or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
    )


def is_binary(head: bytes) -> bool:
    """Content sniffing: a NUL byte, or more than 10% control bytes, means binary."""
    if not head:
        return False
    if b"\x00" in head:
        return True
    control = len(head) - len(head.translate(None, _CONTROL))
    return control * 10 > len(head)


def path_skip_reason(rel: str, opts: IngestOptions) -> str | None:
    """Why a path is skipped by default (vendored dir, lockfile, generated name), or None."""
    parts = rel.split("/")
    name = parts[-1]
    if not opts.include_vendored and any(p in VENDORED_DIRS for p in parts[:-1]):
        return "vendored directory (use --include-vendored)"
    if not opts.include_generated and any(p in GENERATED_DIRS for p in parts[:-1]):
        return "build output directory (use --include-generated)"
    if not opts.include_lockfiles and name in LOCKFILES:
        return "lockfile (use --include-lockfiles)"
    lowered = name.lower()
    if lowered.endswith((".min.js", ".min.css", ".min.mjs")) and not opts.include_minified:
        return "minified (use --include-minified)"
    if lowered.endswith(GENERATED_SUFFIXES) and not opts.include_generated:
        return "generated file (use --include-generated)"
    return None


def content_skip_reason(head: bytes, text: str, opts: IngestOptions) -> str | None:
    """Why decoded text is skipped by default (generated marker, minified), or None."""
    if not opts.include_generated and _GENERATED_MARK.search(head[:1024]):
        return "generated file: marker in header (use --include-generated)"
    if not opts.include_minified and is_minified(text):
        return "minified (use --include-minified)"
    return None


def is_minified(text: str) -> bool:
    """Long files made of very long lines: bundles, minified JS/CSS, data blobs."""
    if len(text) < 2048:
        return False
    lines = text.count("\n") + 1
    first = text.split("\n", 200)[:200]  # element 201 would be the unsplit remainder
    longest = max(len(line) for line in first)
    return len(text) / lines > 300 or longest > 5000
