"""`strata cache stats|verify|clear` through the real CLI entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from kvstore.lmdb_store import LMDBStore
from strata.cli import main
from tests.kvstore.workers import page

MiB = 1 << 20


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, dict]:
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def _fill(path: Path, n: int) -> None:
    store = LMDBStore(path, 16 * MiB)
    store.put_many([page(i) for i in range(n)])
    store.close()


def test_stats_json_in_a_subprocess_uses_strata_home(tmp_path: Path) -> None:
    _fill(tmp_path / "lmdb", 3)
    env = {**os.environ, "STRATA_HOME": str(tmp_path)}
    code = "import sys; from strata.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-c", code, "cache", "stats", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["path"] == str(tmp_path / "lmdb")
    assert report["lmdb"]["entries"] == 3 and report["lmdb"]["status"] == "ok"


def test_verify_finds_repairs_and_clear_empties(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _fill(tmp_path, 4)
    env = lmdb.open(str(tmp_path), max_dbs=8, map_size=64 * MiB)
    pages = env.open_db(b"pages")
    with env.begin(write=True) as txn:
        txn.put(page(0)[0], b"not a record", db=pages)
    env.close()
    code, report = _run(capsys, "cache", "verify", "--json", "--path", str(tmp_path))
    assert code == 1 and report["lmdb"]["corrupt"] == 1 and report["lmdb"]["ok"] == 3
    code, report = _run(capsys, "cache", "verify", "--repair", "--json", "--path", str(tmp_path))
    assert code == 0 and report["lmdb"]["removed"] == 1
    code, report = _run(capsys, "cache", "verify", "--json", "--path", str(tmp_path))
    assert code == 0 and report["lmdb"]["corrupt"] == 0
    code, report = _run(capsys, "cache", "clear", "--json", "--path", str(tmp_path))
    assert code == 0 and report["lmdb"]["removed_entries"] == 3
    code, report = _run(capsys, "cache", "stats", "--json", "--path", str(tmp_path))
    assert report["lmdb"]["entries"] == 0


def test_unreadable_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "data.mdb").write_bytes(b"\x00garbage" * 512)
    code, report = _run(capsys, "cache", "stats", "--json", "--path", str(tmp_path))
    assert code == 2 and "strata cache verify --repair" in report["error"]["message"]
    code, report = _run(capsys, "cache", "verify", "--repair", "--json", "--path", str(tmp_path))
    assert code == 0 and "data.mdb" in report["lmdb"]["rebuilt"]
    code, report = _run(capsys, "cache", "stats", "--json", "--path", str(tmp_path))
    assert code == 0 and report["lmdb"]["status"] == "ok"
    (tmp_path / "data.mdb").write_bytes(b"\x00garbage" * 512)
    code, report = _run(capsys, "cache", "clear", "--json", "--path", str(tmp_path))
    assert code == 0 and "data.mdb" in report["lmdb"]["removed_files"]


def test_text_output_and_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["cache", "stats", "--path", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "exists=False" in out and not (tmp_path / "none").exists()


def test_redis_flag_without_redis_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRATA_KV_REDIS_URL", raising=False)
    code, report = _run(capsys, "cache", "stats", "--redis", "--json", "--path", str(tmp_path))
    assert code == 2 and "STRATA_KV_REDIS_URL" in report["error"]["message"]


def test_redis_stats_and_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    from kvstore.redis_store import RedisStore
    from strata.settings import get_settings

    RedisStore(redis_url).put(*page(1))
    monkeypatch.setenv("STRATA_KV_REDIS_URL", redis_url)
    get_settings.cache_clear()
    try:
        code, report = _run(capsys, "cache", "stats", "--redis", "--json", "--path", str(tmp_path))
        assert code == 0 and report["redis"]["entries"] >= 1
        code, report = _run(capsys, "cache", "clear", "--redis", "--json", "--path", str(tmp_path))
        assert code == 0 and report["redis"]["removed_entries"] >= 1
        assert RedisStore(redis_url).stats()["entries"] == 0
    finally:
        get_settings.cache_clear()


def test_a_scan_that_crashes_is_reported_and_repaired(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A B-tree damaged badly enough makes LMDB itself fault; stand in for it with a child that
    # really dies of SIGBUS, and check that the CLI survives, reports, and repairs.
    import kvstore.maintenance as maintenance

    _fill(tmp_path, 3)
    monkeypatch.setattr(maintenance, "_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGBUS)")
    code, report = _run(capsys, "cache", "verify", "--json", "--path", str(tmp_path))
    assert code == 2 and "SIGBUS" in report["error"]["message"]
    assert "strata cache clear" in report["error"]["message"]
    code, report = _run(capsys, "cache", "verify", "--repair", "--json", "--path", str(tmp_path))
    assert code == 0 and "SIGBUS" in report["lmdb"]["unreadable"] and report["lmdb"]["rebuilt"]
    _fill(tmp_path, 3)
    code, report = _run(capsys, "cache", "clear", "--json", "--path", str(tmp_path))
    assert code == 0 and "SIGBUS" in report["lmdb"]["unreadable"] and report["lmdb"]["removed_files"]
    monkeypatch.undo()
    code, report = _run(capsys, "cache", "stats", "--json", "--path", str(tmp_path))
    assert report["lmdb"]["exists"] is False
