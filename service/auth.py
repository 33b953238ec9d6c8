"""API keys with scopes per client kind, and the middleware that checks them on every route."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.types import ASGIApp, Receive, Send
from litestar.types import Scope as AsgiScope

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
        """Parse ``"key=scope+scope,key2=scope"`` (the API_KEYS setting).

        Raises:
            ValueError: an entry is malformed or names an unknown scope (the message says which,
                showing no more than a key's first three characters).
        """
        keys: dict[str, frozenset[str]] = {}
        for entry in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, scope_text = entry.partition("=")
            scopes = frozenset(s.strip() for s in scope_text.split("+") if s.strip())
            if not sep or not key.strip() or not scopes:
                raise ValueError(f"entry {_mask(entry)!r} must look like key=scope+scope")
            if unknown := scopes - set(SCOPES):
                raise ValueError(
                    f"entry for key {_mask(key)!r}: unknown scope(s) {sorted(unknown)}; "
                    f"known: {', '.join(SCOPES)}"
                )
            keys[key.strip()] = scopes
        if not keys:
            raise ValueError("set but holds no key")
        return cls(keys)

    def scopes_for(self, key: str) -> frozenset[str] | None:
        """The scopes of ``key``, or None for an unknown key."""
        return self._scopes.get(_digest(key))


def dev_key(data_dir: str | Path) -> str:
    """The development key (every scope), created once and kept in ``data_dir`` (mode 0600).

    Workers starting together (``uvicorn --workers``) may all find no key: each writes one to a
    file of its own and links it into place, which only the first link does, so every worker
    reads the same key.
    """
    file = Path(data_dir) / DEV_KEY_FILE
    if file.is_file() and (key := file.read_text().strip()):
        return key
    file.parent.mkdir(parents=True, exist_ok=True)
    own = file.with_name(f".{file.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(own, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("dev-" + secrets.token_urlsafe(24) + "\n")
    try:
        os.link(own, file)
    except FileExistsError:
        if not file.read_text().strip():  # an empty file left by an older version
            os.replace(own, file)
    finally:
        own.unlink(missing_ok=True)
    return file.read_text().strip()


def api_keys_from_settings(api_keys: str | None, data_dir: str | Path) -> ApiKeys:
    """The configured keys, or the development key with every scope when none are configured."""
    if api_keys:
        return ApiKeys.parse(api_keys)
    return ApiKeys({dev_key(data_dir): frozenset(SCOPES)})


def require_scope(app: ASGIApp) -> ASGIApp:
    """Litestar middleware: the request's key must hold the scope in the handler's ``opt["scope"]``.

    ``opt["scope"]`` is one scope or a tuple of scopes any of which will do. The key comes from
    ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. No key or an unknown key is a 401; a
    key without the scope is a 403.

    A middleware, not a guard: Litestar copies the route handler for every guard call, which
    cost more than the check itself on every request. Litestar has matched the route before its
    middleware runs, so the handler is in the scope; its errors are answered as problem details.
    """

    async def check_scope(scope: AsgiScope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        if handler is not None and scope["type"] == "http":
            _authorize(scope, handler.opt.get("scope"))
        await app(scope, receive, send)

    return check_scope


def grants(scope: AsgiScope, wanted: tuple[str, ...]) -> bool:
    """Whether the request's key holds one of the ``wanted`` scopes (no key or an unknown key:
    False). The routes served without Litestar (service/api/fast_routes.py) check with this and
    leave every refusal to ``require_scope``, so it is worded in one place."""
    key = _presented_key(scope)
    if key is None:
        return False
    scopes = scope["app"].state.api_keys.scopes_for(key)
    return scopes is not None and not scopes.isdisjoint(wanted)


def wanted_scopes(opt_scope: str | tuple[str, ...]) -> tuple[str, ...]:
    """A handler's ``opt["scope"]`` (one scope, or several any of which will do) as a tuple."""
    return (opt_scope,) if isinstance(opt_scope, str) else tuple(opt_scope)


def _authorize(scope: AsgiScope, wanted_scope: str | tuple[str, ...] | None) -> None:
    if wanted_scope is None:
        return
    wanted = wanted_scopes(wanted_scope)
    key = _presented_key(scope)
    if key is None:
        raise NotAuthorizedException(
            detail="an API key is required (Authorization: Bearer <key> or X-API-Key)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scopes = scope["app"].state.api_keys.scopes_for(key)
    if scopes is None:
        raise NotAuthorizedException(
            detail="unknown API key", headers={"WWW-Authenticate": "Bearer"}
        )
    if not scopes.intersection(wanted):
        needed = " or ".join(repr(w) for w in wanted)
        raise PermissionDeniedException(detail=f"this API key lacks the {needed} scope")


def _presented_key(scope: AsgiScope) -> str | None:
    # The raw ASGI header list: building Litestar's header mapping cost more than the rest of
    # the check. ASGI header names are lower case.
    auth = api_key = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            auth = value
        elif name == b"x-api-key":
            api_key = value
    scheme, _, token = auth.decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return api_key.decode("latin-1").strip() or None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _mask(text: str) -> str:
    """Never echo a whole secret into logs or errors."""
    return text[:3] + "…" if len(text) > 3 else "…"
