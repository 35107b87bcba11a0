"""Page keys: deterministic across processes, sensitive to every input, chained forward only."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from kvstore.keys import (
    KEY_BYTES,
    LAYOUT_VERSION,
    chain_digests,
    chain_keys,
    chain_pages,
    page_key,
    root_key,
    tokens_digest,
)
from strata.errors import BadRequest

P = 16
IDS = [(i * 7919) % 50_000 for i in range(P * 6 + 5)]  # 6 full pages and a tail
ROOT = root_key(b"model-fp", "fp8", P)

_CHILD = """
from kvstore.keys import chain_keys, root_key
root = root_key(b"model-fp", "fp8", 16, tenant_salt=b"tenant")
ids = [(i * 7919) % 50_000 for i in range(16 * 6 + 5)]
media = [(20, 30, b"img-hash")]
print(",".join(k.hex() for k in chain_keys(root, ids, 16, media)))
"""


def test_same_keys_in_another_process_with_another_hash_seed() -> None:
    root = root_key(b"model-fp", "fp8", P, tenant_salt=b"tenant")
    here = ",".join(k.hex() for k in chain_keys(root, IDS, P, [(20, 30, b"img-hash")]))
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == here


def test_one_key_per_full_page_matching_page_key() -> None:
    keys = chain_keys(ROOT, IDS, P)
    assert len(keys) == len(IDS) // P == 6
    assert all(len(k) == KEY_BYTES for k in keys)
    parent = ROOT
    for i, key in enumerate(keys):
        parent = page_key(parent, IDS[i * P : (i + 1) * P])
        assert key == parent
    assert len(set(keys)) == len(keys)


def test_numpy_and_list_inputs_agree() -> None:
    for dtype in (np.int32, np.int64, np.uint32):
        assert chain_keys(ROOT, np.asarray(IDS, dtype=dtype), P) == chain_keys(ROOT, IDS, P)
    assert tokens_digest(np.asarray(IDS[:P])) == tokens_digest(IDS[:P])


@pytest.mark.parametrize(
    "change",
    [
        {"model_fingerprint": b"other-model"},
        {"kv_dtype": "bf16"},
        {"page_size": 32},
        {"tenant_salt": b"tenant-b"},
        {"layout_version": LAYOUT_VERSION + 1},
    ],
)
def test_every_root_input_changes_every_key(change: dict) -> None:
    args = {"model_fingerprint": b"model-fp", "kv_dtype": "fp8", "page_size": P}
    other = root_key(**{**args, **change})
    assert other != ROOT
    mine, theirs = chain_keys(ROOT, IDS, P), chain_keys(other, IDS, P)
    assert not set(mine) & set(theirs)


def test_root_fields_are_not_ambiguous() -> None:
    # Moving bytes between adjacent fields must not give the same root.
    a = root_key(b"ab", "c", P, tenant_salt=b"")
    b = root_key(b"a", "bc", P, tenant_salt=b"")
    assert a != b


def test_one_changed_token_changes_its_page_and_every_later_one() -> None:
    before = chain_keys(ROOT, IDS, P)
    changed = list(IDS)
    changed[2 * P + 3] += 1
    after = chain_keys(ROOT, changed, P)
    assert after[:2] == before[:2]
    assert all(a != b for a, b in zip(after[2:], before[2:], strict=True))


def test_a_change_in_the_tail_changes_no_key() -> None:
    changed = list(IDS)
    changed[-1] += 1
    assert chain_keys(ROOT, changed, P) == chain_keys(ROOT, IDS, P)


def test_media_hash_enters_only_overlapped_pages() -> None:
    plain = chain_keys(ROOT, IDS, P)
    # positions 20..49 overlap pages 1, 2 and 3 (P=16); page 0 keeps its key
    with_media = chain_keys(ROOT, IDS, P, [(20, 30, b"image-1")])
    assert with_media[0] == plain[0]
    assert all(a != b for a, b in zip(with_media[1:], plain[1:], strict=True))
    # keys of overlapped pages change, and so (chained) do later ones: compare page by page
    parent = ROOT
    for i in range(6):
        media = [b"image-1"] if 1 <= i <= 3 else []
        parent = page_key(parent, IDS[i * P : (i + 1) * P], media)
        assert with_media[i] == parent
    other_image = chain_keys(ROOT, IDS, P, [(20, 30, b"image-2")])
    assert other_image[1:] != with_media[1:] and other_image[0] == with_media[0]


def test_media_span_edges_are_exact() -> None:
    # [16, 32) is exactly page 1: pages 0 and 2 must not include the hash.
    with_media = chain_keys(ROOT, IDS, P, [(16, 16, b"img")])
    parent = ROOT
    for i in range(3):
        parent = page_key(parent, IDS[i * P : (i + 1) * P], [b"img"] if i == 1 else [])
        assert with_media[i] == parent


def test_chain_digests_match_tokens_digest() -> None:
    digests = chain_digests(IDS, P)
    assert digests == [tokens_digest(IDS[i * P : (i + 1) * P]) for i in range(6)]
    media = [(3, 40, b"img")]
    assert chain_pages(ROOT, IDS, P, media) == (chain_keys(ROOT, IDS, P, media), digests)
    assert tokens_digest([1, 2, 3]) != tokens_digest([1, 2, 4])


@pytest.mark.parametrize(
    "ids, message",
    [([1, -2, 3], "2\\*\\*32"), ([1, 2**32], "2\\*\\*32"), ([1, "x"], "integers")],
)
def test_bad_token_ids_name_the_problem(ids: list, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        chain_keys(ROOT, ids, P)


def test_bad_arguments_name_the_problem() -> None:
    with pytest.raises(BadRequest, match="root"):
        chain_keys(b"short", IDS, P)
    with pytest.raises(BadRequest, match="page_size"):
        chain_keys(ROOT, IDS, 0)
    with pytest.raises(BadRequest, match="model_fingerprint"):
        root_key(b"", "fp8", P)
    with pytest.raises(BadRequest, match="media span"):
        chain_keys(ROOT, IDS, P, [(5, 0, b"img")])
    with pytest.raises(BadRequest, match="media hashes"):
        chain_keys(ROOT, IDS, P, [(5, 3, "not-bytes")])
    with pytest.raises(BadRequest, match="2\\*\\*32"):
        chain_keys(ROOT, np.asarray([1, -1], dtype=np.int64), P)
    with pytest.raises(BadRequest, match="1-D"):
        chain_keys(ROOT, np.zeros((2, P), dtype=np.int32), P)
