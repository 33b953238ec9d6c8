"""The error responses each operation documents, so the OpenAPI tells what can come back.

Every error is problem details in ``application/problem+json`` (service/problems.py). Without
these, Litestar documents a 400 as ``application/json`` in its own ``ValidationException`` shape
and no other error at all, which is neither what the service sends nor the whole of it.
"""

from __future__ import annotations

from litestar.openapi import ResponseSpec

from service.problems import MEDIA_TYPE, Problem

_WHY = {
    400: "Invalid input: ``errors`` names each field at fault",
    401: "No API key, or an unknown one",
    403: "The API key lacks this operation's scope",
    404: "Not found: ``detail`` says what",
    409: "Conflicts with what is on record: ``detail`` says how",
    413: "The request body is larger than the service accepts",
    429: "Too many at once: try again later",
    503: "Redis or the model is unavailable; ``Retry-After`` says when to try again",
}
# What any operation behind an API key may answer, whatever it does.
_ANY_SCOPED = (401, 403, 503)


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """The problem responses of an operation behind an API key: ``statuses`` and 401, 403, 503.

    Give 400 wherever the operation takes a parameter or a body (Litestar would otherwise add its
    own, wrong one) and 413 wherever it takes a body.
    """
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=MEDIA_TYPE,
            description=_WHY[status],
            generate_examples=False,
        )
        for status in sorted({*statuses, *_ANY_SCOPED})
    }
