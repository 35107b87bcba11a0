"""Tenants: API keys map to tenants; documents and cached KV pages never cross between them."""

from __future__ import annotations

import subprocess

import pytest

from api.auth import check_auth_mode, tenant_for
from strata.errors import ConfigError, Unauthorized
from strata.settings import Settings
from tests.api.conftest import REPO, Server, free_port, notes_text, serve_cmd, serve_env, upload_ready


def test_documents_are_invisible_to_another_tenant(server: Server) -> None:
    with server.client("alice") as alice, server.client("bob") as bob:
        doc = upload_ready(alice, [("secret.txt", b"alice's secret plan\n")])
        base = f"/v1/documents/{doc['id']}"
        for r in (bob.get(base), bob.post(f"{base}/ask", json={"question": "what?"}), bob.delete(base),
                  bob.get(f"{base}/source", params={"path": "secret.txt", "line_start": 1})):
            assert r.status_code == 404 and r.json()["error"]["type"] == "not_found", r.text
        assert doc["id"] not in [d["id"] for d in bob.get("/v1/documents").json()["data"]]
        chat = bob.post("/v1/chat/completions", json={"model": server.model.name, "documents": [doc["id"]],
                                                      "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 404
        assert alice.get(base).json()["status"] == "ready"  # bob's delete did nothing


def test_same_text_for_two_tenants_shares_no_cached_pages(server: Server) -> None:
    text = notes_text("payroll").encode()
    q = {"question": "Which bucket holds record 35?", "max_tokens": 4}
    with server.client("alice") as alice, server.client("bob") as bob:
        a_doc = upload_ready(alice, [("payroll.txt", text)])
        b_doc = upload_ready(bob, [("payroll.txt", text)])
        assert a_doc["tokens"] == b_doc["tokens"] > 128
        a1 = alice.post(f"/v1/documents/{a_doc['id']}/ask", json=q).json()["usage"]
        a2 = alice.post(f"/v1/documents/{a_doc['id']}/ask", json=q).json()["usage"]
        assert a1["cached_tokens"] == 0 and a2["cached_tokens"] > 0
        b1 = bob.post(f"/v1/documents/{b_doc['id']}/ask", json=q).json()["usage"]
        assert b1["prompt_tokens"] == a1["prompt_tokens"]  # byte-identical prompt, different tenant
        assert b1["cached_tokens"] == 0
        b2 = bob.post(f"/v1/documents/{b_doc['id']}/ask", json=q).json()["usage"]
        assert b2["cached_tokens"] == a2["cached_tokens"]


def test_keys_resolve_in_constant_time_and_refuse_unknown() -> None:
    s = Settings(api_keys={"k" * 16: "acme", "z" * 20: "globex"})
    assert tenant_for(s, "Bearer " + "k" * 16) == "acme"
    assert tenant_for(s, "bearer " + "z" * 20) == "globex"
    for header in (None, "", "Bearer ", "Basic " + "k" * 16, "Bearer " + "k" * 15):
        with pytest.raises(Unauthorized):
            tenant_for(s, header)
    assert tenant_for(Settings(auth="none", local_tenant="me"), None) == "me"
    with pytest.raises(ValueError):
        Settings(api_keys={"short": "acme"})
    with pytest.raises(ValueError):
        Settings(api_keys={"k" * 16: "../etc"})


def test_unauthenticated_mode_only_on_loopback() -> None:
    check_auth_mode(Settings(auth="none"), "127.0.0.1")
    check_auth_mode(Settings(auth="none"), "::1")
    for host in ("0.0.0.0", "192.168.1.10", "example.com", "::"):
        with pytest.raises(ConfigError, match="loopback"):
            check_auth_mode(Settings(auth="none"), host)
    with pytest.raises(ConfigError, match="STRATA_API_KEYS"):
        check_auth_mode(Settings(auth="keys", api_keys={}), "127.0.0.1")


def test_serve_refuses_to_start_open_on_a_network_address(tiny_model, tmp_path) -> None:
    env = serve_env(tmp_path, STRATA_AUTH="none")
    out = subprocess.run(serve_cmd(tiny_model, free_port(), host="0.0.0.0"), env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "loopback" in out.stderr
