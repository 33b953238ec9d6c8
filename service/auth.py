"""API keys with scopes per client kind, and the guard every /v1 route uses."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

log = logging.getLogger(__name__)

Scope = Literal["recommend", "events", "offers", "customers", "admin"]
SCOPES: tuple[str, ...] = get_args(Scope)
DEV_KEY_FILE = "dev-api-key"


class ApiKeys:
    """Known keys and their scopes. Keys are held only as SHA-256 digests."""

    def __init__(self, keys: Mapping[str, frozenset[str]]) -> None:
        """``keys`` maps each plain key to its scopes."""
        self._scopes = {_digest(key): scopes for key, scopes in keys.items()}

    @classmethod
    def parse(cls, spec: str) -> ApiKeys:
        """Parse ``"key=scope+scope,key2=scope"``.

        Raises:
            ValueError: an entry is malformed or names an unknown scope (the message says which).
        """
        keys: dict[str, frozenset[str]] = {}
        for entry in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, scope_text = entry.partition("=")
            scopes = frozenset(s.strip() for s in scope_text.split("+") if s.strip())
            if not sep or not key.strip() or not scopes:
                raise ValueError(f"API_KEYS entry {_mask(entry)!r} must look like key=scope+scope")
            if unknown := scopes - set(SCOPES):
                raise ValueError(
                    f"API_KEYS entry for key {_mask(key)!r}: unknown scope(s) {sorted(unknown)}; "
                    f"known: {', '.join(SCOPES)}"
                )
            keys[key.strip()] = scopes
        if not keys:
            raise ValueError("API_KEYS is set but holds no key")
        return cls(keys)

    def scopes_for(self, key: str) -> frozenset[str] | None:
        """The scopes of ``key``, or None for an unknown key."""
        return self._scopes.get(_digest(key))


def dev_key(data_dir: str | Path) -> str:
    """The development key (every scope), created once and kept in ``data_dir`` (mode 0600)."""
    file = Path(data_dir) / DEV_KEY_FILE
    if file.is_file() and (key := file.read_text().strip()):
        return key
    file.parent.mkdir(parents=True, exist_ok=True)
    key = "dev-" + secrets.token_urlsafe(24)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def api_keys_from_settings(api_keys: str | None, data_dir: str | Path) -> ApiKeys:
    """The configured keys, or the development key with every scope when none are configured."""
    if api_keys:
        return ApiKeys.parse(api_keys)
    return ApiKeys({dev_key(data_dir): frozenset(SCOPES)})


async def require_scope(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Litestar guard: the request's key must hold the scope in the handler's ``opt["scope"]``.

    ``opt["scope"]`` is one scope or a tuple of scopes any of which will do. The key comes from
    ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. No key or an unknown key is a 401; a
    key without the scope is a 403.

    Async although it never awaits: Litestar runs a sync guard in a worker thread, a thread hop
    on every request (about 50 us of CPU each, measured in benchmarks/serving_overhead.py).
    """
    scope = handler.opt.get("scope")
    if scope is None:
        return
    wanted = (scope,) if isinstance(scope, str) else tuple(scope)
    key = _presented_key(connection)
    if key is None:
        raise NotAuthorizedException(
            detail="an API key is required (Authorization: Bearer <key> or X-API-Key)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scopes = connection.app.state.api_keys.scopes_for(key)
    if scopes is None:
        raise NotAuthorizedException(
            detail="unknown API key", headers={"WWW-Authenticate": "Bearer"}
        )
    if not scopes.intersection(wanted):
        needed = " or ".join(repr(w) for w in wanted)
        raise PermissionDeniedException(detail=f"this API key lacks the {needed} scope")


def _presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    auth = connection.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return connection.headers.get("x-api-key", "").strip() or None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _mask(text: str) -> str:
    """Never echo a whole secret into logs or errors."""
    return text[:3] + "…" if len(text) > 3 else "…"
