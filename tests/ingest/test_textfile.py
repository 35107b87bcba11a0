"""Token-to-line mapping: byte lengths (fast path) agree with the tokenizer's own offsets."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.textfile import decode, line_starts, line_tokens

TEXTS = [
    "def f(x):\n    return x\n",
    "no newline at the end",
    "caf\u00e9 \u2014 na\u00efve \U0001f600 emoji\n\n\n\tTabbed line\nlast",
    "\n\nleading blank lines\n",
    "",
    "x" * 300 + "\n" + "y" * 5 + "\n",
]


@pytest.mark.parametrize("text", TEXTS)
def test_byte_length_path_matches_offsets(target, text: str) -> None:
    lens = target.token_byte_lengths()
    assert lens is not None  # byte-level BPE
    enc = target.tokenizer.encode(text, add_special_tokens=False)
    ids = np.asarray(enc.ids, dtype=np.int32)
    fast = line_tokens(text, ids, lens)
    slow = line_tokens(text, ids, None, enc.offsets)
    assert fast is not None and fast.tolist() == slow.tolist()
    assert len(fast) - 1 == len(line_starts(text))
    lines = text.split("\n")
    for i in range(len(fast) - 1):  # each line's tokens decode back to that line
        chunk = target.tokenizer.decode(ids[fast[i] : fast[i + 1]].tolist())
        assert lines[i].strip() in chunk  # indentation may ride on the previous newline token


def test_lengths_that_do_not_add_up_fall_back(target) -> None:
    lens = target.token_byte_lengths().copy()
    ids = np.asarray(target.encode("abc\ndef\n"), dtype=np.int32)
    lens[ids[0]] += 1
    assert line_tokens("abc\ndef\n", ids, lens) is None


def test_decode_never_fails() -> None:
    assert decode(b"\xef\xbb\xbfhi\r\nthere\r") == ("hi\nthere\n", "")
    text, note = decode(b"ok \xff\xfe bytes")
    assert "\ufffd" in text and note.startswith("not UTF-8 (byte 3)")
