"""`strata ingest`: the human report and the --json contract."""

from __future__ import annotations

import json

from strata.cli import main

from .helpers import SAMPLES


def test_ingest_json(model_dir, tmp_path, capsys) -> None:
    rc = main(
        [
            "ingest",
            str(SAMPLES / "repo"),
            str(SAMPLES / "docs"),
            "--model",
            str(model_dir),
            "--json",
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] > 0 and out["tokens"] <= out["budget"] == 65536
    assert len(out["digest"]) == 32
    ledger = {i["path"]: i for i in out["ledger"]}
    assert ledger["repo/app.py"]["status"] == "included" and ledger["repo/app.py"]["tokens"] > 0
    assert ledger["repo/package-lock.json"]["status"] == "dropped"
    assert ledger["docs/report.pdf"]["kind"] == "pdf"
    assert out["summary"]["by_kind"]["pdf"] == 1
    rc = main(
        [
            "ingest",
            str(SAMPLES / "repo"),
            str(SAMPLES / "docs"),
            "--model",
            str(model_dir),
            "--json",
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    again = json.loads(capsys.readouterr().out)
    assert again["digest"] == out["digest"] and again["stats"]["parsed"] == 0


def test_ingest_report_budget_and_flags(model_dir, tmp_path, capsys) -> None:
    rc = main(
        [
            "ingest",
            str(SAMPLES / "repo"),
            "--model",
            str(model_dir),
            "--budget",
            "400",
            "--include-lockfiles",
            "--no-cache",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "of a 400 budget" in out and "largest items:" in out and "path_only" in out
    assert "package-lock.json: lockfile" not in out
    assert "repo/logo.bin: binary content (sniffed)" in out


def test_ingest_without_model_fails_clearly(monkeypatch, capsys) -> None:
    from strata.settings import get_settings

    monkeypatch.delenv("STRATA_MODEL", raising=False)
    get_settings.cache_clear()
    try:
        rc = main(["ingest", str(SAMPLES / "repo"), "--json"])
    finally:
        get_settings.cache_clear()
    assert rc == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert err["type"] == "config_error" and "--model" in err["message"]


def test_ingest_max_file_bytes_flag(model_dir, capsys) -> None:
    rc = main(
        ["ingest", str(SAMPLES / "repo"), "--model", str(model_dir), "--json", "--no-cache", "--max-file-bytes", "400"]
    )
    assert rc == 0
    ledger = {i["path"]: i for i in json.loads(capsys.readouterr().out)["ledger"]}
    assert ledger["repo/app.py"]["status"] == "dropped" and "too large" in ledger["repo/app.py"]["reason"]
    assert ledger["repo/README.md"]["status"] == "included"


def test_settings_limits_reach_the_cli(model_dir, monkeypatch, capsys) -> None:
    from strata.settings import get_settings

    monkeypatch.setenv("STRATA_INGEST_MAX_FILE_BYTES", "300")
    get_settings.cache_clear()
    try:
        rc = main(["ingest", str(SAMPLES / "repo"), "--model", str(model_dir), "--json", "--no-cache"])
    finally:
        get_settings.cache_clear()
    assert rc == 0
    ledger = {i["path"]: i for i in json.loads(capsys.readouterr().out)["ledger"]}
    assert "too large" in ledger["repo/client/cart.js"]["reason"]
