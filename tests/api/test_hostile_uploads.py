"""Hostile uploads: zip slip, absolute paths, links, bombs, oversized bodies, corrupt archives and media.

Each is refused with a clear JSON error and leaves nothing behind: no file outside the store, no
half-stored document.
"""

from __future__ import annotations

import io
import random
import stat
import tarfile
import zipfile
from collections.abc import Iterator

import pytest

from tests.api.conftest import Server, upload, zip_bytes


def tar_bytes(members: list[tarfile.TarInfo], data: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for m in members:
            payload = data.get(m.name)
            if payload is not None:
                m.size = len(payload)
            tf.addfile(m, io.BytesIO(payload) if payload is not None else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def zip_symlink() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("repo/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def zip_bomb(size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("repo/zeros.txt", b"0" * size)
    return buf.getvalue()


NOISE = random.Random(0).randbytes(50_000)  # incompressible, so a cut lands inside the data

HOSTILE = {
    "zip slip": ("evil.zip", zip_bytes({"repo/../../../../escaped.txt": b"pwned"}), 400, ".."),
    "zip absolute": ("evil.zip", zip_bytes({"/tmp/escaped.txt": b"pwned"}), 400, "absolute"),
    "zip symlink": ("evil.zip", zip_symlink(), 400, "link"),
    "tar slip": ("evil.tar.gz", tar_bytes([member("../escaped.txt")], {"../escaped.txt": b"x"}), 400, ".."),
    "tar symlink": ("evil.tar", tar_bytes([member("repo/passwd", tarfile.SYMTYPE, "/etc/passwd")], {},
                                          "w"), 400, "link"),
    "tar hardlink": ("evil.tgz", tar_bytes([member("repo/a", tarfile.LNKTYPE, "/etc/shadow")], {}), 400,
                     "link"),
    "tar device": ("evil.tar.gz", tar_bytes([member("repo/null", tarfile.CHRTYPE)], {}), 400, "device"),
    "zip bomb": ("bomb.zip", zip_bomb(20_000_000), 413, "max_unpacked_bytes"),
    "tar bomb": ("bomb.tar.gz", tar_bytes([member("z")], {"z": b"\0" * 20_000_000}), 413, "max_unpacked_bytes"),
    "entry flood": ("many.zip", zip_bytes({f"repo/{i}.txt": b"x" for i in range(100)}), 413,
                    "max_archive_entries"),
    "corrupt zip": ("broken.zip", b"PK\x03\x04 this is not really a zip archive", 400, "corrupt"),
    "truncated tar.gz": ("cut.tar.gz", tar_bytes([member("a.txt")], {"a.txt": NOISE})[:9000], 400, "corrupt"),
    "empty archive": ("empty.zip", zip_bytes({}), 400, "empty"),
    "corrupt png": ("photo.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50, 400, "nothing could be ingested"),
    "corrupt pdf": ("paper.pdf", b"%PDF-1.7\n1 0 obj broken", 400, "nothing could be ingested"),
    "bad name": ("..", b"x", 400, "file name"),
}


def _store_snapshot(server: Server) -> set[str]:
    root = server.home / "uploads"
    paths = {p.relative_to(root) for p in root.rglob("*")} if root.exists() else set()
    return {str(p) for p in paths if len(p.parts) > 1}  # below the tenant directories


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_upload_is_refused_and_leaves_nothing(server: Server, case: str) -> None:
    name, data, status, words = HOSTILE[case]
    with server.client("bob") as http:
        before_docs = http.get("/v1/documents").json()["data"]
        before = _store_snapshot(server)
        r = upload(http, [(name, data)])
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert set(err) == {"type", "message"} and words in err["message"], err
        after = _store_snapshot(server)
        docs = http.get("/v1/documents").json()["data"]
    if case.startswith("corrupt p"):  # the media was stored, then failed to ingest: marked "failed"
        assert len(docs) == len(before_docs) + 1 and docs[-1]["status"] == "failed"
        http = server.client("bob")
        http.delete(f"/v1/documents/{docs[-1]['id']}")
        http.close()
    else:
        assert docs == before_docs and after == before
    assert not list(server.home.parent.rglob("escaped.txt"))


def test_oversized_upload_with_content_length(server: Server) -> None:
    with server.client() as http:
        r = upload(http, [("big.txt", b"a" * 3_000_000)])
        assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"


def test_oversized_chunked_upload_stops_at_the_limit(server: Server) -> None:
    """No Content-Length: the server counts the body as it streams and stops past the limit."""
    boundary = "strataboundary"

    def body() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"chunked-huge.txt\"\r\n"
               "Content-Type: text/plain\r\n\r\n").encode()
        for _ in range(400):  # 400 x 64 KiB = 25 MiB, far past the 2 MB limit
            yield b"a" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    with server.client() as http:
        r = http.post("/v1/documents", content=body(), headers=headers)
        assert r.status_code == 413 and "max_upload_bytes" in r.json()["error"]["message"]
        assert "content-length" not in r.request.headers
        assert http.get("/healthz").status_code == 200
    assert not [p for p in (server.home / "uploads").rglob("chunked-huge.txt")]


def test_not_multipart_is_415(server: Server) -> None:
    with server.client() as http:
        r = http.post("/v1/documents", content=b"hello", headers={"content-type": "text/plain"})
        assert r.status_code == 415 and r.json()["error"]["type"] == "unsupported_media"
        r = http.post("/v1/documents", files={"note": (None, "just a field")})
        assert r.status_code == 400 and "no file" in r.json()["error"]["message"]
