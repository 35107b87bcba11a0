"""The directory tree listing of a source: indented names, directories with a slash."""

from __future__ import annotations


def render_tree(root: str, rels: list[str], max_entries: int, dirs_only: bool = False) -> str:
    """An indented listing of sorted relative paths, cut after `max_entries` lines."""
    lines = [f"{root}/"]
    seen_dirs: set[str] = set()
    hidden = 0
    for rel in sorted(rels):
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            d = "/".join(parts[:depth])
            if d not in seen_dirs:
                seen_dirs.add(d)
                if len(lines) <= max_entries:
                    lines.append("  " * depth + parts[depth - 1] + "/")
                else:
                    hidden += 1
        if dirs_only:
            continue
        if len(lines) <= max_entries:
            lines.append("  " * len(parts) + parts[-1])
        else:
            hidden += 1
    if hidden:
        lines.append(f"... {hidden} more entries")
    return "\n".join(lines) + "\n"
