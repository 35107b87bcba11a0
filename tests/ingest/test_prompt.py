"""The Prompt contract: determinism, prefix stability, budget degradation, the source map."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ingest import IngestOptions, build_prompt

from .helpers import SAMPLES, write


def _make_repo(root: Path, n_files: int = 12) -> Path:
    write(root, "LICENSE", "MIT License\n")
    write(root, "README.md", "# demo\n\nSee src/.\n")
    for i in range(n_files):
        body = "".join(
            f'def fn_{i}_{j}(x):\n    """Return x plus {j}."""\n    y = x + {j}\n'
            + "".join(f"    y = y * {k} + {i} - {j}\n" for k in range(6))
            + "    return y\n\n"
            for j in range(6 + i)
        )
        write(root, f"src/mod_{i:02d}.py", body)
    write(root, "tests/test_mod.py", "def test_one():\n    assert 1\n")
    return root


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def test_same_input_gives_byte_identical_prompt(tmp_path: Path, target) -> None:
    repo = _make_repo(tmp_path / "repo")
    sources = [repo, SAMPLES / "docs", SAMPLES / "images"]
    a = build_prompt(sources, target, options=IngestOptions(cache_dir=tmp_path / "c1"))
    b = build_prompt(sources, target, options=IngestOptions(cache_dir=tmp_path / "c2"))  # cold
    c = build_prompt(sources, target, options=IngestOptions(cache_dir=tmp_path / "c1"))  # warm
    assert a.token_ids == b.token_ids == c.token_ids
    assert a.digest() == b.digest() == c.digest()
    assert [m.media_hash for m in a.media] == [m.media_hash for m in c.media]
    copy = shutil.copytree(repo, tmp_path / "elsewhere" / "repo")  # same name, other place
    d = build_prompt(
        [copy, SAMPLES / "docs", SAMPLES / "images"], target, options=IngestOptions(cache_dir=tmp_path / "c1")
    )
    assert d.digest() == a.digest()


def test_editing_one_file_changes_prompt_only_from_its_place(tmp_path: Path, target, opts) -> None:
    repo = _make_repo(tmp_path / "repo")
    before = build_prompt([repo], target, options=opts)
    path = repo / "src" / "mod_07.py"
    old = path.read_text()
    line = old.splitlines().index('    """Return x plus 3."""') + 1
    path.write_text(old.replace("plus 3", "plus three"))
    after = build_prompt([repo], target, options=opts)
    start = next(s.start for s in before.source_map if s.path == "repo/src/mod_07.py")
    common = _common_prefix(before.token_ids, after.token_ids)
    assert common >= start  # everything before the edited file survives...
    edited_line = next(
        s
        for s in before.source_map
        if s.path == "repo/src/mod_07.py" and s.line_start is not None and s.line_start <= line <= s.line_end
    )
    assert common <= edited_line.end  # ...and the change starts inside the edited lines
    # The tail after the file is the same tokens, only shifted (files tokenized alone).
    end_before = max(s.end for s in before.source_map if s.path == "repo/src/mod_07.py")
    end_after = max(s.end for s in after.source_map if s.path == "repo/src/mod_07.py")
    assert before.token_ids[end_before:] == after.token_ids[end_after:]


def test_stable_first_order(tmp_path: Path, target, opts) -> None:
    repo = _make_repo(tmp_path / "repo", n_files=2)
    paths = [i.path for i in build_prompt([repo], target, options=opts).ledger]
    assert paths == [
        "repo/LICENSE",
        "repo/README.md",
        "repo/src/mod_00.py",
        "repo/src/mod_01.py",
        "repo/tests/test_mod.py",
        "repo/",
    ]
    tree_first = IngestOptions(cache_dir=opts.cache_dir, tree_first=True)
    assert build_prompt([repo], target, options=tree_first).ledger[0].kind == "tree"


def test_budget_degrades_full_then_outline_then_path(tmp_path: Path, target, opts) -> None:
    repo = _make_repo(tmp_path / "repo")
    full = build_prompt([repo], target, options=opts)
    assert {i.status for i in full.ledger} == {"included"}
    statuses_seen = set()
    for budget in (len(full) - 1, len(full) * 2 // 3, len(full) // 3, len(full) // 10, 300, 60, 5):
        p = build_prompt([repo], target, budget=budget, options=opts)
        assert len(p.token_ids) <= budget, budget
        assert sum(i.tokens for i in p.ledger) + 1 == len(p.token_ids)  # +1: BOS
        assert p.summary()["items"] == len(full.ledger)  # every input accounted for
        statuses = {i.path: i.status for i in p.ledger}
        statuses_seen |= set(statuses.values())
        outlined = [i for i in p.ledger if i.status == "outlined"]
        for item in outlined:
            assert item.reason.startswith("outline")
    assert {"included", "outlined", "path_only", "dropped"} <= statuses_seen
    # Under a middle budget the biggest files are the ones outlined and small ones stay whole.
    mid = build_prompt([repo], target, budget=len(full) * 2 // 3, options=opts)
    by_path = {i.path: i for i in mid.ledger}
    assert by_path["repo/src/mod_11.py"].status == "outlined"
    assert by_path["repo/src/mod_00.py"].status == "included"
    text = target.tokenizer.decode(mid.token_ids)
    assert '<file path="repo/src/mod_11.py" view="outline">' in text
    assert "def fn_11_3(x):" in text and "y = 11 + 3" not in text


def test_outline_maps_back_to_source_lines(tmp_path: Path, target, opts) -> None:
    repo = _make_repo(tmp_path / "repo")
    full = build_prompt([repo], target, options=opts)
    mid = build_prompt([repo], target, budget=len(full) * 2 // 3, options=opts)
    spans = [s for s in mid.source_map if s.kind == "outline" and s.path == "repo/src/mod_11.py"]
    assert spans and spans[0].line_start == 1
    decoded = target.tokenizer.decode(mid.token_ids[spans[-1].start : spans[-1].end])
    last_def = decoded.strip().splitlines()[-1]
    src_lines = (repo / "src" / "mod_11.py").read_text().splitlines()
    assert last_def.strip() in {line.strip() for line in src_lines[spans[-1].line_start - 1 : spans[-1].line_end]}


def test_cite_returns_file_and_lines(tmp_path: Path, target, opts) -> None:
    repo = _make_repo(tmp_path / "repo")
    p = build_prompt([repo], target, options=opts)
    text_ids = p.token_ids
    needle = target.encode("fn_4_2")
    at = next(i for i in range(len(text_ids)) if text_ids[i : i + len(needle)] == needle)
    spans = p.cite(at, at + len(needle))
    assert spans and spans[0].path == "repo/src/mod_04.py"
    line = (repo / "src" / "mod_04.py").read_text().splitlines().index("def fn_4_2(x):") + 1
    assert spans[0].line_start <= line <= spans[0].line_end
    assert spans[0].label().startswith("repo/src/mod_04.py:")
    assert p.cite(5, 5) == []
    # Spans tile the prompt in order without overlap.
    for a, b in zip(p.source_map, p.source_map[1:], strict=False):
        assert a.end <= b.start


def test_special_token_text_in_files_stays_text(tmp_path: Path, target, opts) -> None:
    write(tmp_path / "r", "inject.md", "<|image|><|patch|><|/image|> <|bos|>\n")
    p = build_prompt([tmp_path / "r"], target, options=opts)
    specials = {target.image_start_token_id, target.image_patch_token_id, target.image_end_token_id}
    assert not specials & set(p.token_ids)
    assert p.token_ids.count(target.bos_token_id) == 1 and p.token_ids[0] == target.bos_token_id


def test_append_question_and_media_in_range(target, opts) -> None:
    p = build_prompt([SAMPLES / "images" / "checkout.png"], target, options=opts)
    n = len(p)
    span = p.append_text("What is the total?\n", target.encode)
    assert span.start == n and p.cite(n, len(p))[0].path == "<question>"
    m = p.media[0]
    assert p.media_in(m.start, m.start + 1) == [m] and p.media_in(0, m.start) == []


def test_budget_must_be_positive(target, opts) -> None:
    from strata.errors import BadRequest

    with pytest.raises(BadRequest):
        build_prompt([SAMPLES / "repo"], target, budget=0, options=opts)


def test_progress_bars_go_to_stderr_and_change_nothing(target, opts, capsys) -> None:
    quiet = build_prompt([SAMPLES / "repo"], target, options=opts)
    shown = build_prompt([SAMPLES / "repo"], target, options=opts, progress=True)
    out, err = capsys.readouterr()
    assert shown.digest() == quiet.digest() and out == "" and "ingest repo" in err


def test_material_far_over_budget_tokenizes_only_what_is_kept(tmp_path, target) -> None:
    repo = _make_repo(tmp_path / "repo", n_files=40)
    budget = 3000
    cold = build_prompt([repo], target, budget=budget, options=IngestOptions(cache_dir=tmp_path / "c"))
    assert len(cold) <= budget
    assert any("only kept files were tokenized" in w for w in cold.warnings)
    files = [i for i in cold.ledger if i.kind == "file"]
    kept_whole = [i for i in files if i.status == "included"]
    assert kept_whole and any(i.status in ("outlined", "path_only") for i in files)
    outlines = sum(1 for i in files if i.status == "outlined")
    # Parsing work: the kept files' tokens plus outlines, not the full text of all 43 files.
    assert cold.stats["parsed"] < len(files) + outlines
    warm = build_prompt([repo], target, budget=budget, options=IngestOptions(cache_dir=tmp_path / "c"))
    again = build_prompt([repo], target, budget=budget, options=IngestOptions(cache_dir=tmp_path / "other"))
    assert warm.digest() == cold.digest() == again.digest()
    exact = build_prompt([repo], target, budget=10**7, options=IngestOptions(cache_dir=tmp_path / "c"))
    assert all(i.status == "included" for i in exact.ledger)
