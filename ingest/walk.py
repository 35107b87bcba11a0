"""List the files of a directory: `git ls-files` in a checkout, else a walk honouring .gitignore.

Symlinks are never followed out of the root, directory symlinks are never descended (so loops
cannot happen), and every path that is left out for such a reason gets a ledger entry.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from ingest.options import IngestOptions

GIT_TIMEOUT_S = 120


@dataclass(slots=True)
class Found:
    """A regular file to ingest: its path relative to the root (posix) and where to read it."""

    rel: str
    path: Path


@dataclass(slots=True)
class Skipped:
    """A path left out before reading it, and why."""

    rel: str
    reason: str
    error: bool = False


@dataclass(slots=True)
class Listing:
    """The outcome of listing one root."""

    found: list[Found] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    via_git: bool = False


def list_files(root: Path, opts: IngestOptions) -> Listing:
    """All candidate files under `root`, in sorted order of their relative path."""
    root = root.resolve()
    listing = Listing()
    rels = _git_ls_files(root, listing) if (root / ".git").exists() else None
    if rels is None:
        _walk(root, opts, listing)
    else:
        listing.via_git = True
        for rel in rels:
            _admit(root, rel, listing)
            if len(listing.found) >= opts.max_files:
                listing.warnings.append(f"{root}: stopped after {opts.max_files} files (max_files)")
                break
    listing.found.sort(key=lambda f: f.rel)
    listing.skipped.sort(key=lambda s: s.rel)
    return listing


def _git_ls_files(root: Path, listing: Listing) -> list[str] | None:
    if shutil.which("git") is None:
        listing.warnings.append(f"{root}: git not found; walking the tree with .gitignore rules")
        return None
    cmd = ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        listing.warnings.append(f"{root}: git ls-files failed ({exc}); walking instead")
        return None
    if out.returncode != 0:
        msg = out.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
        listing.warnings.append(f"{root}: git ls-files failed ({' '.join(msg)}); walking instead")
        return None
    names = {n.decode("utf-8", "surrogateescape") for n in out.stdout.split(b"\0") if n}
    return sorted(names)


def _admit(root: Path, rel: str, listing: Listing) -> None:
    """Check one listed path: regular file, or a symlink that stays inside the root."""
    path = root / rel
    try:
        st = path.lstat()
    except FileNotFoundError:
        return  # tracked but deleted in the working tree: not part of what the user sees
    except OSError as exc:
        listing.skipped.append(Skipped(rel, f"unreadable: {exc.strerror}", error=True))
        return
    if stat.S_ISLNK(st.st_mode):
        _admit_symlink(root, rel, path, listing)
    elif stat.S_ISREG(st.st_mode):
        listing.found.append(Found(rel, path))
    elif stat.S_ISDIR(st.st_mode):
        listing.skipped.append(Skipped(rel, "git submodule or nested repository: not descended"))
    else:
        listing.skipped.append(Skipped(rel, "not a regular file (device, fifo or socket)"))


def _admit_symlink(root: Path, rel: str, path: Path, listing: Listing) -> None:
    try:
        target = path.resolve(strict=True)
    except RuntimeError:
        listing.skipped.append(Skipped(rel, "symlink loop", error=True))
        return
    except OSError as exc:
        reason = "symlink loop" if exc.errno == 40 else f"broken symlink ({exc.strerror})"
        listing.skipped.append(Skipped(rel, reason, error=True))
        return
    if not target.is_relative_to(root):
        listing.skipped.append(Skipped(rel, "symlink escapes the root: not followed", error=True))
    elif target.is_dir():
        listing.skipped.append(Skipped(rel, "symlink to a directory inside the root: not descended"))
    elif target.is_file():
        listing.found.append(Found(rel, target))
    else:
        listing.skipped.append(Skipped(rel, "symlink to a non-regular file"))


class _Ignores:
    """The stack of .gitignore specs that apply in one directory, deepest last."""

    def __init__(self, root: Path) -> None:
        self.layers: list[tuple[str, pathspec.GitIgnoreSpec]] = []
        exclude = root / ".git" / "info" / "exclude"
        self.push("", exclude)  # lowest priority: a repo's local excludes
        self.push("", root / ".gitignore")

    def push(self, base: str, file: Path) -> bool:
        """Add the rules of `file` for paths under `base`; False if there is no such file."""
        try:
            lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return False
        self.layers.append((base, pathspec.GitIgnoreSpec.from_lines(lines)))
        return True

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether git would ignore `rel`: the deepest matching rule decides."""
        for base, spec in reversed(self.layers):
            if base and not rel.startswith(base + "/"):
                continue
            sub = rel[len(base) + 1 :] if base else rel
            result = spec.check_file(sub + "/" if is_dir else sub)
            if result.include is not None:
                return bool(result.include)
        return False


def _walk(root: Path, opts: IngestOptions, listing: Listing) -> None:
    ignores = _Ignores(root)
    stack: list[tuple[str, int]] = [("", len(ignores.layers))]
    while stack:
        base, depth = stack.pop()
        del ignores.layers[depth:]  # drop the specs of directories we have left
        if base:
            ignores.push(base, root / base / ".gitignore")
        try:
            entries = sorted(os.scandir(root / base), key=lambda e: e.name, reverse=True)
        except OSError as exc:
            listing.skipped.append(Skipped(base or ".", f"unreadable directory: {exc.strerror}", error=True))
            continue
        layer_count = len(ignores.layers)
        for entry in entries:
            rel = f"{base}/{entry.name}" if base else entry.name
            if entry.name == ".git":
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if ignores.ignored(rel, is_dir):
                continue
            if is_dir:
                stack.append((rel, layer_count))
            else:
                _admit(root, rel, listing)
            if len(listing.found) >= opts.max_files:
                listing.warnings.append(f"{root}: stopped after {opts.max_files} files (max_files)")
                return
