"""``OPTIONS`` answers every method of its path in ``Allow``.

Litestar answers ``OPTIONS`` with the methods of the route as it stood when its first handler
was registered: a controller's ``GET``, ``PUT`` and ``DELETE`` of one path came out as
``Allow: DELETE, OPTIONS`` (its 405 answer has them all). This hook rewrites the header from the
app's map of every path's handlers, the same one routing uses.
"""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope


async def allow_every_method(message: Message, scope: Scope) -> None:
    """``before_send`` hook: the full ``Allow`` on the answer to an ``OPTIONS`` request."""
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
        return
    handler = scope.get("route_handler")
    if handler is None or message["status"] != 204:  # no route: a 404; not a generated answer
        return
    methods_by_path = scope["app"].route_handler_method_map
    methods = {m for path in handler.paths for m in methods_by_path.get(path, {})}
    if methods:
        MutableScopeHeaders(message)["allow"] = ", ".join(sorted(methods))
