"""Reading a request body under a size limit, shared by every route that takes one.

Decoding it is :func:`service.hooks.request_guard.decode_json_object`, the one decoder of a request
body: it lives below the web layer because the hook front door, which ``calf-cds try`` also goes
through, decodes the body itself.
"""

from __future__ import annotations

from starlette.requests import Request

from service.hooks.request_guard import BodyTooLargeError

__all__ = ["BodyTooLargeError", "read_body"]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes (:class:`BodyTooLargeError`) before
    reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)
