"""Tree-sitter outlines: the signatures and doc lines of a source file, with their line numbers.

The outline is the middle level of degradation (full text -> outline -> path): a large file
shrinks to its API surface. Grammars come from the per-language wheels, which work offline.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import tree_sitter as ts

EXTENSIONS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".hxx": "cpp",
}
_GRAMMARS = {  # language -> (wheel module, function returning the grammar)
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
}

# Definitions whose signature (text up to the body) is kept; those in NESTING are descended.
_DEFS = {
    "function_definition",
    "class_definition",  # python, c, c++
    "function_declaration",
    "generator_function_declaration",
    "class_declaration",
    "abstract_class_declaration",
    "method_definition",
    "interface_declaration",
    "enum_declaration",
    "method_declaration",
    "constructor_declaration",
    "record_declaration",
    "function_item",
    "struct_item",
    "enum_item",
    "trait_item",
    "impl_item",
    "mod_item",
    "union_item",
    "class_specifier",
    "struct_specifier",
    "namespace_definition",
    "annotation_type_declaration",
    "internal_module",
    "module",
}
_NESTING = {
    "class_definition",
    "class_declaration",
    "abstract_class_declaration",
    "interface_declaration",
    "trait_item",
    "impl_item",
    "mod_item",
    "class_specifier",
    "struct_specifier",
    "namespace_definition",
    "record_declaration",
    "enum_declaration",
    "internal_module",
    "module",
}
# Wrappers whose children are looked at as if they stood in their place.
_WRAPPERS = {
    "decorated_definition",
    "export_statement",
    "template_declaration",
    "declaration_list",
    "field_declaration_list",
    "class_body",
    "interface_body",
    "enum_body",
    "block",
    "statement_block",
    "linkage_specification",
    "ambient_declaration",
}
# Short declarations kept whole (first lines only when long): types, prototypes, consts.
_WHOLE = {
    "type_declaration",
    "type_alias_declaration",
    "type_item",
    "const_item",
    "static_item",
    "function_signature_item",
    "method_signature",
    "abstract_method_signature",
    "function_signature",
    "property_signature",
    "type_definition",
    "declaration",
    "field_declaration",
    "public_field_definition",
    "lexical_declaration",
    "const_declaration",
}
_PREFIX_WRAPPERS = {"export_statement", "template_declaration", "ambient_declaration"}
_COMMENTS = {"comment", "line_comment", "block_comment"}
MAX_SIGNATURE_LINES = 6
MAX_WHOLE_LINES = 12
MAX_DOC_LINES = 3

_parsers: dict[str, ts.Parser] = {}


@dataclass(slots=True)
class OutlineLine:
    """One outline line and the 1-based source line it stands for."""

    line: int
    text: str


def language_for(path: str) -> str | None:
    """The tree-sitter language of a path, by extension, or None."""
    return EXTENSIONS.get(os.path.splitext(path)[1].lower())


def _parser(language: str) -> ts.Parser:
    parser = _parsers.get(language)
    if parser is None:
        module, fn = _GRAMMARS[language]
        grammar = getattr(importlib.import_module(module), fn)()
        parser = _parsers[language] = ts.Parser(ts.Language(grammar))
    return parser


def outline(source: bytes, language: str) -> list[OutlineLine]:
    """Signatures, doc lines and short type declarations of a source file, in file order."""
    tree = _parser(language).parse(source)
    out: list[OutlineLine] = []
    _visit(tree.root_node, source, out, language, top=True)
    return out


def _visit(
    node: ts.Node, src: bytes, out: list[OutlineLine], lang: str, top: bool, anchor: ts.Node | None = None
) -> None:
    """Walk definitions; `anchor` is a prefix wrapper (export, template) the text starts at."""
    for child in node.named_children:
        kind, start = child.type, anchor or child
        if kind in _WRAPPERS:
            if kind == "decorated_definition":
                _emit_decorators(child, src, out)
            prefix = kind in _PREFIX_WRAPPERS
            _visit(child, src, out, lang, top, anchor=child if prefix else None)
        elif kind in _DEFS:
            _emit_doc_comments(start, src, out)
            body = child.child_by_field_name("body")
            if child.start_point.row == child.end_point.row:
                _emit_lines(start, src, out, 1, end=child.end_byte)
                continue
            _emit_signature(start, body, src, out, lang, child.end_byte)
            if lang == "python" and body is not None:
                _emit_docstring(body, src, out)
            if kind in _NESTING and body is not None:
                _visit(body, src, out, lang, top=False)
        elif kind in _WHOLE and (top or kind not in ("declaration", "lexical_declaration")):
            if kind in ("declaration", "lexical_declaration") and not _is_callable_decl(child):
                continue
            _emit_doc_comments(start, src, out)
            _emit_lines(start, src, out, MAX_WHOLE_LINES, end=child.end_byte)


def _is_callable_decl(node: ts.Node) -> bool:
    """C prototypes and JS `const f = () => ...` are API; other variables are not."""
    text = node.text or b""
    return (
        b"=>" in text[:400]
        or b"function" in text[:200]
        or (node.type == "declaration" and any(c.type == "function_declarator" for c in node.named_children))
    )


def _indent(node: ts.Node) -> str:
    return " " * node.start_point.column


def _emit_signature(
    node: ts.Node, body: ts.Node | None, src: bytes, out: list[OutlineLine], lang: str, node_end: int
) -> None:
    end = body.start_byte if body is not None else node_end
    text = src[node.start_byte : end].decode("utf-8", "replace").rstrip()
    lines = text.split("\n")[:MAX_SIGNATURE_LINES]
    if body is not None and lang != "python":
        lines[-1] += " { ... }" if src[body.start_byte : body.start_byte + 1] == b"{" else " ..."
    row = node.start_point.row + 1
    lines[0] = _indent(node) + lines[0]
    out.extend(OutlineLine(row + i, line) for i, line in enumerate(lines))


def _emit_lines(node: ts.Node, src: bytes, out: list[OutlineLine], limit: int, end: int | None = None) -> None:
    text = src[node.start_byte : end or node.end_byte].decode("utf-8", "replace").rstrip()
    lines = text.split("\n")
    row = node.start_point.row + 1
    kept = lines[:limit]
    kept[0] = _indent(node) + kept[0]
    if len(lines) > limit:
        kept.append(_indent(node) + "    ...")
    out.extend(OutlineLine(row + min(i, limit - 1), line) for i, line in enumerate(kept))


def _emit_decorators(node: ts.Node, src: bytes, out: list[OutlineLine]) -> None:
    for child in node.named_children:
        if child.type == "decorator":
            _emit_lines(child, src, out, 1)


def _emit_docstring(body: ts.Node, src: bytes, out: list[OutlineLine]) -> None:
    first = body.named_children[0] if body.named_children else None
    if first is None or first.type != "expression_statement" or not first.named_children:
        return
    if first.named_children[0].type == "string":
        _emit_lines(first, src, out, MAX_DOC_LINES)


def _emit_doc_comments(node: ts.Node, src: bytes, out: list[OutlineLine]) -> None:
    """The comment block that ends on the line just above a definition (its doc comment)."""
    comments = []
    prev, row = node.prev_named_sibling, node.start_point.row
    while prev is not None and prev.type in _COMMENTS and prev.end_point.row >= row - 1:
        comments.append(prev)
        row = prev.start_point.row
        prev = prev.prev_named_sibling
    budget = MAX_DOC_LINES
    for comment in reversed(comments):
        if budget <= 0:
            break
        n_lines = comment.end_point.row - comment.start_point.row + 1
        _emit_lines(comment, src, out, budget)
        budget -= n_lines
