"""API keys -> tenants, and the unauthenticated local mode (loopback only)."""

from __future__ import annotations

import hmac
import ipaddress

from strata.errors import ConfigError, Unauthorized
from strata.settings import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_auth_mode(settings: Settings, host: str) -> None:
    """Refuse to start open to the network, or with no way to authenticate at all."""
    if settings.auth == "none" and not is_loopback(host):
        raise ConfigError(f"STRATA_AUTH=none serves without authentication: only on a loopback host, "
                          f"not {host!r}")
    if settings.auth == "keys" and not settings.api_keys:
        raise ConfigError("no API keys: set STRATA_API_KEYS='{\"<key>\": \"<tenant>\"}' "
                          "(or STRATA_AUTH=none for local use on 127.0.0.1)")


def tenant_for(settings: Settings, authorization: str | None) -> str:
    """The tenant an Authorization header belongs to (the local tenant when auth is off)."""
    if settings.auth == "none":
        return settings.local_tenant
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    key = key.strip()
    found = None
    for known, tenant in settings.api_keys.items():  # compare every key in constant time
        if hmac.compare_digest(known.encode(), key.encode()):
            found = tenant
    if found is None:
        raise Unauthorized("invalid API key")
    return found
