"""Structured logs: one JSON object per line, with the request id and no personal data.

Customer ids never appear in clear: ``pseudonym()`` replaces them with a short keyed hash, and a
last line of defence masks anything that looks like an email address or a phone number in every
message.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import re
from datetime import UTC, datetime
from typing import Any

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
# A phone number: 9 to 15 digits in groups split by spaces, dashes or brackets, perhaps after a
# "+", standing on its own (not inside a word, an address, a time or a version), or the North
# American 555.123.4567. Not an ISO date, a model version (20261207T023206Z, or one ending in
# "-246155" before an item count), an IP address or a count: those keep operators' logs readable.
# Digits right after a hyphen belong to an identifier.
_PHONE = re.compile(
    r"(?<![\w.+-])(?!\d{4}-\d{2}-\d{2}(?!\d))(?:\+\s?)?\(?\d(?:[ ()-]{0,2}\d){8,14}(?![\w.:])"
    r"|(?<![\w.])\d{3}\.\d{3}\.\d{4}(?![\w.])"
)
# Fields of LogRecord itself; anything else passed with ``extra=`` is logged as a JSON field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_HANDLER_NAME = "omnireco-json"


def start_request() -> str:
    """Give the current request (context) a fresh id and return it."""
    request_id = new_id()
    _request_id.set(request_id)
    return request_id


def new_id() -> str:
    """128 random bits as 32 hex digits (what ``uuid4().hex`` gives, at a quarter of its cost)."""
    return os.urandom(16).hex()


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    return _request_id.get()


def pseudonym(identifier: str) -> str:
    """A stable, non-reversible stand-in for a customer id in logs (12 hex digits)."""
    return hashlib.blake2b(identifier.encode(), digest_size=6, person=b"omnireco-log").hexdigest()


def mask(text: str) -> str:
    """``text`` with email addresses and phone numbers replaced."""
    return _PHONE.sub("<phone>", _EMAIL.sub("<email>", text))


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, request id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line for ``record``."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != "request_id":
                entry[key] = mask(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = mask(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure(level: str) -> None:
    """Send the service's logs to stderr as JSON lines (once per process)."""
    logger = logging.getLogger("service")
    logger.setLevel(level)
    if any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    # Litestar's default logging config puts a plain-text handler on the root logger; our
    # records stop here so they are written once, as JSON, masked.
    logger.propagate = False
