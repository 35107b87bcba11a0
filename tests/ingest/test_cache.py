"""The extraction cache: unchanged sources are not parsed again, and nothing is written elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

from ingest import IngestOptions, build_prompt
from ingest.cache import ExtractCache

from .helpers import SAMPLES


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def test_second_ingest_does_no_parsing_work(target, opts) -> None:
    sources = [SAMPLES / "repo", SAMPLES / "docs", SAMPLES / "images", SAMPLES / "video"]
    first = build_prompt(sources, target, options=opts)
    assert first.stats["parsed"] >= 12 and first.stats["cache_hits"] == 0
    second = build_prompt(sources, target, options=opts)
    assert second.stats["parsed"] == 0
    assert second.stats["cache_hits"] == first.stats["parsed"]
    assert second.digest() == first.digest()


def test_edit_reparses_only_the_edited_file(tmp_path, target, opts) -> None:
    root = tmp_path / "r"
    root.mkdir()
    for i in range(5):
        (root / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n")
    build_prompt([root], target, options=opts)
    (root / "m3.py").write_text("def f3():\n    return 'changed'\n")
    again = build_prompt([root], target, options=opts)
    assert again.stats == {"parsed": 1, "cache_hits": 4}


def test_outlines_are_cached_too(tmp_path, target, opts) -> None:
    root = tmp_path / "r"
    root.mkdir()
    for i in range(4):
        body = "".join(f"def f{i}_{j}(x):\n" + "    x += 1\n" * 8 + "    return x\n" for j in range(10))
        (root / f"m{i}.py").write_text(body)
    full = len(build_prompt([root], target, options=opts))
    tight = build_prompt([root], target, budget=full // 2, options=opts)
    assert any(i.status == "outlined" for i in tight.ledger) and tight.stats["parsed"] > 0
    again = build_prompt([root], target, budget=full // 2, options=opts)
    assert again.stats["parsed"] == 0 and again.digest() == tight.digest()


def test_writes_only_into_the_cache_dir(tmp_path, target) -> None:
    home_like = tmp_path / "home"
    home_like.mkdir()
    before_samples = _snapshot(SAMPLES)
    before_tmp = _snapshot(tmp_path)
    cache = tmp_path / "home" / "extracts"
    build_prompt([SAMPLES], target, options=IngestOptions(cache_dir=cache))
    assert _snapshot(SAMPLES) == before_samples
    new = set(_snapshot(tmp_path)) - set(before_tmp)
    assert new and all(p.startswith(str(cache) + os.sep) for p in new)
    before = _snapshot(tmp_path)
    build_prompt([SAMPLES], target, options=IngestOptions(cache_dir=tmp_path / "unused", use_cache=False))
    assert _snapshot(tmp_path) == before


def test_damaged_cache_entry_is_a_miss(tmp_path) -> None:
    import numpy as np

    cache = ExtractCache(tmp_path)
    cache.put("ab" * 20, {"x": np.arange(3)}, {"k": 1})
    assert cache.get("ab" * 20) is None  # queued, not yet committed
    cache.flush()
    arrays, meta = cache.get("ab" * 20)
    assert meta == {"k": 1} and arrays["x"].tolist() == [0, 1, 2]
    from ingest.cache import _env

    with _env(tmp_path, 1 << 20).begin(write=True) as txn:  # flip one payload byte
        blob = bytearray(txn.get(("ab" * 20).encode()))
        blob[-1] ^= 0xFF
        txn.put(("ab" * 20).encode(), bytes(blob))
    assert cache.get("ab" * 20) is None
    cache.flush()  # the damaged entry is removed
    with _env(tmp_path, 1 << 20).begin() as txn:
        assert txn.get(("ab" * 20).encode()) is None


def test_unusable_cache_dir_only_costs_the_caching(tmp_path, target) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be\n")
    p = build_prompt([SAMPLES / "repo"], target, options=IngestOptions(cache_dir=blocker / "extracts"))
    assert any(i.status == "included" for i in p.ledger)
    assert any(w.startswith("extraction cache disabled") for w in p.warnings)
