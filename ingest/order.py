"""The stable-first order of items: what keeps the longest cached prefix when material changes.

A prompt prefix is reused only up to the first changed token, so content that rarely changes
goes first: legal files, then build manifests and config, then docs, then source, then tests,
then media. Within a class the order is the byte order of the path. The order depends on
paths only, never on content, so editing a file moves nothing.
"""

from __future__ import annotations

LEGAL, CONFIG, DOCS, SOURCE, TESTS, MEDIA, TREE = range(7)

_LEGAL_NAMES = (
    "license",
    "licence",
    "copying",
    "notice",
    "authors",
    "patents",
    "code_of_conduct",
    "security",
    "contributors",
)
_CONFIG_NAMES = {
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "package.json",
    "tsconfig.json",
    "cargo.toml",
    "go.mod",
    "makefile",
    "cmakelists.txt",
    "dockerfile",
    "meson.build",
    "build.gradle",
    "pom.xml",
    "gemfile",
    "requirements.txt",
    ".editorconfig",
    ".gitignore",
    ".gitattributes",
    "tox.ini",
    "noxfile.py",
    "manifest.in",
    "build.bazel",
    "workspace",
    "justfile",
}
_CONFIG_SUFFIXES = (".toml", ".ini", ".cfg", ".yaml", ".yml", ".lock", ".conf")
_DOC_SUFFIXES = (".md", ".rst", ".txt", ".adoc", ".org")
_TEST_DIRS = {"test", "tests", "testing", "__tests__", "spec", "specs", "e2e"}


def stability_class(rel: str, media: bool = False) -> int:
    """0 (rarely changes) .. 5 (media); see the module docstring."""
    if media:
        return MEDIA
    parts = rel.split("/")  # plain string work: this runs once per file of a large repository
    name = parts[-1].lower()
    stem = name.split(".")[0]
    if stem in _LEGAL_NAMES:
        return LEGAL
    if name in _CONFIG_NAMES or (len(parts) <= 2 and name.endswith(_CONFIG_SUFFIXES)) or ".github" in parts:
        return CONFIG
    if name.endswith(_DOC_SUFFIXES) or (parts[0].lower() in ("docs", "doc")):
        return DOCS
    if (
        not _TEST_DIRS.isdisjoint(rel.lower().split("/")[:-1])
        or stem.startswith("test_")
        or stem.endswith(("_test", "_spec"))
        or ".test." in name
        or ".spec." in name
    ):
        return TESTS
    return SOURCE


def order_key(source_index: int, rel: str, media: bool = False) -> tuple:
    """Sort key: sources in the order given, then stability class, then path bytes."""
    return (source_index, stability_class(rel, media), rel.encode("utf-8", "surrogateescape"))
