"""Customer identifiers (``email:``, ``loyalty:``, ``phone:``, ``device:``, ``cookie:``...).

Pure functions: parsing, the set of known kinds, and normalisation, so ``Email:Ann@Example.com ``
and ``email:ann@example.com`` are one identifier and ``phone:+44 (7700) 900-042`` matches
``phone:+447700900042``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from service.errors import InvalidRequest

BUILT_IN_KINDS = ("email", "loyalty", "phone", "device", "cookie")
_NOT_PHONE = re.compile(r"[^\d+]")
_SPACES = re.compile(r"\s+")


class InvalidIdentifier(InvalidRequest):
    """An identifier that is not ``kind:value`` with a known kind and a usable value."""

    slug = "invalid-identifier"
    title = "Invalid identifier"


def kinds(extra: Iterable[str] = ()) -> frozenset[str]:
    """The identifier kinds accepted: the built-in ones plus those the retailer configures."""
    return frozenset(BUILT_IN_KINDS) | {k.strip().lower() for k in extra if k.strip()}


def is_identifier(text: str, known: frozenset[str]) -> bool:
    """True when ``text`` looks like ``kind:value`` with a known kind (not a plain customer id)."""
    kind, sep, _ = text.partition(":")
    return bool(sep) and kind.lower() in known


def normalise(identifier: str, known: frozenset[str]) -> str:
    """The canonical form of ``identifier``.

    Raises:
        InvalidIdentifier: unknown kind or empty value (the message says which).
    """
    kind, sep, value = identifier.strip().partition(":")
    kind = kind.lower()
    if not sep or kind not in known:
        choices = ", ".join(sorted(known))
        raise InvalidIdentifier(f"identifier {identifier!r} must look like kind:value ({choices})")
    value = normalise_value(kind, value)
    if not value:
        raise InvalidIdentifier(f"identifier {identifier!r} has an empty value")
    if kind == "phone" and not any(c.isdigit() for c in value):
        # "phone:+" and "phone:00" both normalise to "+": no number, yet one shared identifier.
        raise InvalidIdentifier(f"identifier {identifier!r} has no digits")
    return f"{kind}:{value}"


def check_all(references: Iterable[str], known: frozenset[str]) -> None:
    """Normalise every identifier among ``references`` (plain customer ids pass) to find bad ones.

    Raises:
        InvalidIdentifier: for the first identifier that does not normalise.
    """
    for reference in references:
        if is_identifier(reference, known):
            normalise(reference, known)


def normalise_value(kind: str, value: str) -> str:
    """Normalise the value part: case and spaces for emails and cards, formatting for phones."""
    value = value.strip()
    if kind == "email":
        return value.lower()
    if kind == "phone":
        digits = _NOT_PHONE.sub("", value)
        # "+" only counts at the front; "0044..." is the same number as "+44...".
        digits = digits[0] + digits[1:].replace("+", "") if digits else digits
        return "+" + digits[2:] if digits.startswith("00") else digits
    if kind == "loyalty":
        return _SPACES.sub("", value).upper()
    return value


def mask(identifier: str) -> str:
    """A display form that does not reveal the identifier (for the tablet and logs)."""
    kind, _, value = identifier.partition(":")
    if kind == "email" and "@" in value:
        user, _, domain = value.partition("@")
        return f"{kind}:{user[:1]}***@{domain}"
    return f"{kind}:{'*' * max(len(value) - 4, 3)}{value[-4:]}" if len(value) > 4 else f"{kind}:***"
