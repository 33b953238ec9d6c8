"""Export slots: how many audience exports one worker runs at once, and a stream that holds one.

A slot is taken when the export is accepted, so that one past the limit is refused (429) at
once rather than queued unseen, and given back when its response is over however it ends:
finished, failed, cancelled by the client leaving, or never started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from litestar.exceptions import TooManyRequestsException
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send


class ExportSlots:
    """The exports running in one worker: at most ``size``, more are refused (429), not queued."""

    def __init__(self, size: int) -> None:
        """``size`` slots, all free."""
        self.size = self.free = size

    def refuse_when_full(self) -> None:
        """Raise 429 when every slot is taken."""
        if self.free <= 0:
            raise TooManyRequestsException(detail=f"{self.size} exports already running")

    def take(self) -> Callable[[], None]:
        """Take a slot (429 when none is free); returns what gives it back, once however often
        it is called (the stream's end and the response's end both call it)."""
        self.refuse_when_full()
        self.free -= 1
        given_back = False

        def release() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self.free += 1

        return release


class SlotStream(Stream):
    """A stream that gives its export slot back when the response is over, however it ends:
    also when it never starts (the client left before the first byte), where the lines'
    generator never runs and so never reaches its ``finally``."""

    def __init__(self, *args: Any, release: Callable[[], None], **kwargs: Any) -> None:
        """A ``Stream`` (same arguments) that calls ``release`` when its response is over."""
        super().__init__(*args, **kwargs)
        self.release = release

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        """The streaming response, wrapped to release the slot once it is over."""
        return cast(
            ASGIResponse, _Releasing(super().to_asgi_response(*args, **kwargs), self.release)
        )


class _Releasing:
    """An ASGI response that calls ``release`` once it is over, sent or not."""

    def __init__(self, response: ASGIResponse, release: Callable[[], None]) -> None:
        """Wrap ``response``."""
        self.response = response
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send ``response``, then release (also when sending failed or was cancelled)."""
        try:
            await self.response(scope, receive, send)
        finally:
            self.release()
