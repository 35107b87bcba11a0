"""A deterministic training text for the demo tokenizer: prose and code in the languages ingest reads.

Generated from fixed word lists with a seeded generator, so every machine trains the identical
tokenizer without shipping or downloading a corpus.
"""

from __future__ import annotations

import random

PROSE = """the of and to in is that it for as with was on be by this are from at or an have not
which but all were when we there can more one their has would what about if out so into
than them only other new some could time these two may then do first any my now such like our over
man me even most made after also did many before must through back years where much your way well
down should because each just those people how too little state good very make world still own see
men work long get here between both life being under never day same another know while last might us
great old year off come since against go came right used take three system data model query answer
question file page image video frame token cache prefix memory page store layer attention expert
repository source document report design test server client request response error result value
function class module package import return string number list table index key hash digest budget
context window sparse dense decode prefill sample stream batch worker queue tenant upload archive
""".split()

CODE = {
    "python": ["def", "class", "return", "import", "from", "self", "None", "True", "False", "if",
               "elif", "else", "for", "in", "while", "with", "as", "try", "except", "raise", "yield",
               "lambda", "async", "await", "pass", "assert", "print", "len", "range", "dict", "list"],
    "javascript": ["function", "const", "let", "var", "return", "async", "await", "export",
                   "import", "default", "class", "extends", "new", "this", "null", "undefined",
                   "=>", "console.log", "document", "window", "Promise", "JSON.stringify"],
    "go": ["func", "package", "import", "type", "struct", "interface", "return", "err", "nil",
           "if", "for", "range", "go", "chan", "defer", "map", "string", "int", "error", "fmt.Println"],
    "rust": ["fn", "let", "mut", "impl", "struct", "enum", "match", "pub", "use", "mod", "Self",
             "self", "Option", "Result", "Some", "None", "Ok", "Err", "Vec", "String", "&str"],
    "c": ["int", "char", "void", "struct", "return", "if", "else", "for", "while", "static",
          "const", "unsigned", "size_t", "NULL", "#include", "#define", "malloc", "free", "printf"],
}
NAMES = ["user", "path", "page", "cache", "config", "request", "token", "index", "buffer", "count",
         "value", "result", "items", "store", "model", "layer", "query", "key", "data", "size"]
PUNCT = ["(", ")", "{", "}", "[", "]", ":", ";", ",", ".", "=", "==", "+", "-", "*", "/", "->"]


def generate(seed: int = 1234, paragraphs: int = 1500) -> str:
    """About 1 MB of prose, code-like lines, numbers and markup; identical for a given seed."""
    rng = random.Random(seed)
    parts: list[str] = []
    for i in range(paragraphs):
        words = [rng.choice(PROSE) for _ in range(rng.randint(20, 60))]
        words[0] = words[0].capitalize()
        parts.append(" ".join(words) + ".\n")
        lang = rng.choice(sorted(CODE))
        for _ in range(rng.randint(3, 8)):
            toks = [rng.choice(CODE[lang]), rng.choice(NAMES) + rng.choice(["", "_id", "s", "Count"]),
                    rng.choice(PUNCT), rng.choice(NAMES), rng.choice(PUNCT), str(rng.randint(0, 4096))]
            parts.append("    " * rng.randint(0, 3) + " ".join(toks) + "\n")
        parts.append(f"# Section {i}: {rng.choice(PROSE)} {rng.choice(PROSE)}\n\n")
    return "".join(parts)
