"""Reading a request body under a size limit, shared by every route that takes one."""

from __future__ import annotations

from starlette.requests import Request

__all__ = ["BodyTooLargeError", "read_body", "read_body_with_overflow"]


class BodyTooLargeError(Exception):
    """The request body is larger than ``max_body_bytes``."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes before reading them all."""
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


async def read_body_with_overflow(request: Request, limit: int, hard_limit: int) -> tuple[bytes, bool]:
    """The body and whether it is over ``limit``; refused (:class:`BodyTooLargeError`) over
    ``max(limit, hard_limit)`` before reading it all."""
    ceiling = max(limit, hard_limit)
    body = await read_body(request, ceiling)
    return body, len(body) > limit
