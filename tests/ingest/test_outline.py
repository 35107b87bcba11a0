"""Tree-sitter outlines for the eight required languages: signatures and docs, not bodies."""

from __future__ import annotations

import pytest

from ingest.outline import language_for, outline

CASES = {
    "a.py": (
        b'import os\n\n@cache\ndef area(w: int, h: int) -> int:\n    """Area of a box."""\n'
        b"    secret_body = w * h\n    return secret_body\n\n"
        b'class Shape(Base):\n    """A shape."""\n\n    def grow(self, k):\n        secret_body = k\n',
        [
            "@cache",
            "def area(w: int, h: int) -> int:",
            '"""Area of a box."""',
            "class Shape(Base):",
            '"""A shape."""',
            "def grow(self, k):",
        ],
    ),
    "a.js": (
        b"// Adds two numbers.\nexport function add(a, b) {\n  const secret_body = a + b;\n"
        b"  return secret_body;\n}\nclass Cart {\n  total() {\n    let secret_body = 0;\n"
        b"    return secret_body;\n  }\n}\nconst mul = (a, b) => {\n  return a * b;\n};\n",
        [
            "// Adds two numbers.",
            "export function add(a, b) { ... }",
            "class Cart { ... }",
            "total() { ... }",
            "const mul = (a, b) => {",
        ],
    ),
    "a.ts": (
        b"export interface Point {\n  x: number;\n  y: number;\n}\n"
        b"export class Box<T> {\n  get(key: string): T {\n    const secret_body = 1;\n"
        b"    return secret_body as T;\n  }\n}\nexport function f(a: number): string {\n"
        b"  const secret_body = String(a);\n  return secret_body;\n}\n",
        [
            "export interface Point { ... }",
            "x: number",
            "export class Box<T> { ... }",
            "get(key: string): T { ... }",
            "export function f(a: number): string { ... }",
        ],
    ),
    "a.go": (
        b"package shop\n\n// Order is paid.\ntype Order struct {\n\tID int\n}\n\n// Ship ships.\n"
        b"func Ship(o Order) string {\n\tsecret_body := o.ID\n\treturn fmt.Sprint(secret_body)\n}\n"
        b"func (o *Order) Cancel() error {\n\tsecret_body := 1\n\t_ = secret_body\n\treturn nil\n}\n",
        [
            "// Order is paid.",
            "type Order struct {",
            "// Ship ships.",
            "func Ship(o Order) string { ... }",
            "func (o *Order) Cancel() error { ... }",
        ],
    ),
    "a.rs": (
        b"/// A point.\npub struct Point {\n    x: i32,\n}\n\nimpl Point {\n"
        b"    pub fn norm(&self) -> i32 {\n        let secret_body = self.x;\n        secret_body\n"
        b"    }\n}\n\npub trait Shape {\n    fn area(&self) -> f64;\n}\n",
        [
            "/// A point.",
            "pub struct Point { ... }",
            "impl Point { ... }",
            "pub fn norm(&self) -> i32 { ... }",
            "pub trait Shape { ... }",
            "fn area(&self) -> f64;",
        ],
    ),
    "A.java": (
        b"package shop;\n\n/** A cart. */\npublic class Cart {\n  private int n;\n\n"
        b"  public Cart(int n) {\n    int secret_body = n;\n    this.n = secret_body;\n  }\n\n"
        b"  public int size() {\n    int secret_body = n;\n    return secret_body;\n  }\n}\n",
        [
            "/** A cart. */",
            "public class Cart { ... }",
            "public Cart(int n) { ... }",
            "public int size() { ... }",
        ],
    ),
    "a.c": (
        b"#include <stdio.h>\n\nstruct point {\n  int x;\n  int y;\n};\n\nint add(int a, int b);\n\n"
        b"/* Adds. */\nint add(int a, int b) {\n  int secret_body = a + b;\n  return secret_body;\n}\n",
        ["struct point { ... }", "int add(int a, int b);", "/* Adds. */", "int add(int a, int b) { ... }"],
    ),
    "a.cpp": (
        b"namespace shop {\nclass Cart : public Base {\n public:\n  int size() const {\n"
        b"    int secret_body = 1;\n    return secret_body;\n  }\n};\n"
        b"template <typename T>\nT twice(T x) {\n  T secret_body = x + x;\n  return secret_body;\n}\n}\n",
        [
            "namespace shop { ... }",
            "class Cart : public Base { ... }",
            "int size() const { ... }",
            "template <typename T>",
            "T twice(T x) { ... }",
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_outline_keeps_signatures_and_drops_bodies(name: str) -> None:
    source, expected = CASES[name]
    lang = language_for(name)
    assert lang is not None
    lines = outline(source, lang)
    text = "\n".join(line.text for line in lines)
    for piece in expected:
        assert piece in text, (piece, text)
    assert "secret_body" not in text
    src_lines = source.decode().splitlines()
    for line in lines:  # each outline line points at the source line it came from
        first_word = line.text.strip().split()[0]
        assert first_word in src_lines[line.line - 1], (line, src_lines[line.line - 1])


def test_unknown_language_and_broken_source() -> None:
    assert language_for("notes.txt") is None
    lines = outline(b"def broken(:\n    pass\nclass Ok:\n    pass\n", "python")
    assert any("class Ok" in line.text for line in lines)  # error-tolerant parse
