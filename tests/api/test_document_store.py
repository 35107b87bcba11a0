"""DocumentStore without HTTP (the jobs use it too): layout, tenants, archives, prompts, failures."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from ingest import Target
from strata.archives import archive_stem, safe_member_path
from strata.documents import FAILED, PROCESSING, READY, DocumentStore, UploadLimits, check_tenant
from strata.errors import BadRequest, IngestError, NotFound, PayloadTooLarge
from tests.api.conftest import zip_bytes


@pytest.fixture(scope="module")
def target(tiny_model: Path) -> Target:
    return Target.from_model_dir(tiny_model)


def f(name: str, data: bytes) -> tuple[str, io.BytesIO]:
    return name, io.BytesIO(data)


def test_create_lays_out_files_and_archives(tmp_path: Path, target: Target) -> None:
    store = DocumentStore(tmp_path / "uploads", extract_cache=tmp_path / "extracts")
    doc = store.create("acme", [f("notes.txt", b"hello\n"),
                                f("repo.zip", zip_bytes({"repo/a.py": b"x = 1\n", "repo/b/c.md": b"# c\n"})),
                                f("flat.tar.gz", _tar({"one.txt": b"1\n", "two.txt": b"2\n"}))])
    assert doc.status == PROCESSING and doc.sources == ["notes.txt", "repo", "flat"]
    files = tmp_path / "uploads" / "acme" / doc.id / "files"
    assert sorted(str(p.relative_to(files)) for p in files.rglob("*") if p.is_file()) == [
        "flat/one.txt", "flat/two.txt", "notes.txt", "repo/a.py", "repo/b/c.md"]
    meta = json.loads((files.parent / "meta.json").read_text())
    assert meta["id"] == doc.id and meta["tenant"] == "acme"
    assert sorted(p.name for p in files.parent.iterdir()) == ["files", "meta.json"]  # no staging left
    ready = store.ingest("acme", doc.id, target, 3000)
    assert ready.status == READY and ready.tokens > 0
    assert ready.ledger == []  # kept in its own file, read only when asked for
    ledger = store.get("acme", doc.id, ledger=True).ledger
    assert {i["path"] for i in ledger} >= {"notes.txt", "repo/a.py", "flat/one.txt"}
    assert sorted(p.name for p in files.parent.iterdir()) == ["files", "ledger.json", "meta.json"]
    assert store.source_file("acme", doc.id, "repo/b/c.md").read_bytes() == b"# c\n"
    assert store.prompt("acme", doc.id, target, 3000) is store.prompt("acme", doc.id, target, 3000)


def test_tenants_and_ids_are_checked(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    doc = store.create("acme", [f("a.txt", b"a\n")])
    for tenant, doc_id in (("globex", doc.id), ("acme", "doc_" + "f" * 24), ("acme", "../acme")):
        with pytest.raises(NotFound):
            store.get(tenant, doc_id)
    with pytest.raises(NotFound):
        store.delete("globex", doc.id)
    for bad in ("../x", "", ".hidden", "a/b", "x" * 65):
        with pytest.raises(BadRequest):
            check_tenant(bad)
    for rel in ("../meta.json", "/etc/passwd", "a.txt/../../meta.json"):
        with pytest.raises(NotFound):
            store.source_file("acme", doc.id, rel)
    assert [d.id for d in store.list("acme")] == [doc.id] and store.list("globex") == []
    store.delete("acme", doc.id)
    assert store.list("acme") == [] and not any((tmp_path / "acme").iterdir())


def test_limits_and_failures_leave_nothing(tmp_path: Path, target: Target) -> None:
    store = DocumentStore(tmp_path, UploadLimits(max_upload_bytes=1000))
    with pytest.raises(PayloadTooLarge):
        store.create("acme", [f("a.txt", b"a" * 600), f("b.txt", b"b" * 600)])  # the limit is per upload
    with pytest.raises(BadRequest, match="two uploads"):
        store.create("acme", [f("a.txt", b"a"), f("a.txt", b"b")])
    with pytest.raises(BadRequest, match="appears twice"):
        store.create("acme", [f("d.zip", zip_bytes({"d/x": b"1", "d/./x": b"2"}))])
    assert not (tmp_path / "acme").exists() or not any((tmp_path / "acme").iterdir())
    doc = store.create("acme", [f("broken.pdf", b"%PDF-1.4 not really")])
    with pytest.raises(IngestError):
        store.ingest("acme", doc.id, target, 3000)
    assert store.get("acme", doc.id).status == FAILED
    with pytest.raises(BadRequest, match="failed to ingest"):
        store.prompt("acme", doc.id, target, 3000)


def test_archive_names() -> None:
    assert archive_stem("Repo.TAR.GZ") == "Repo" and archive_stem("x.tgz") == "x"
    assert archive_stem(".zip") == ".zip"
    assert safe_member_path("./a//b/") is not None and str(safe_member_path("./a//b/")) == "a/b"
    assert safe_member_path("./") is None
    for hostile in ("../a", "a/../../b", "/abs", "C:/win", "C:\\win", "a\\..\\..\\b", "a\x00b"):
        with pytest.raises(BadRequest):
            safe_member_path(hostile)


def _tar(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()

