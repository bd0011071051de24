"""Outage or refusal: what a failed audit write means, and how a refusal is worded.

The audit writer spools a batch while the database is **down** and retries it later; a record the
database **refuses** would be refused on every retry, so it is isolated and kept as a dead letter
(``service.store.dead_letters``) with :func:`refusal_reason`.
"""

from __future__ import annotations

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

__all__ = ["is_refusal", "refusal_reason"]


def is_refusal(error: BaseException) -> bool:
    """True when the database refused the data (it would again), False when it is down or unready.

    Refusals: ``DataError`` (NUL in text, a string over its column, a bad value),
    ``IntegrityError``, a ``StatementError`` raised before the statement reached the database (a
    value that cannot be sent), and a malformed record (``ValueError``, ``TypeError``, ``KeyError``
    while building its row). Everything else (``OperationalError``, ``InterfaceError``, a pool
    timeout, ``ProgrammingError`` from a schema that is not migrated yet, a connection invalidated
    mid-statement) is an outage: retrying later can succeed.
    """
    if isinstance(error, DBAPIError):
        return not error.connection_invalidated and isinstance(error, DataError | IntegrityError)
    if isinstance(error, SQLAlchemyError):
        return isinstance(error, StatementError)
    return isinstance(error, ValueError | TypeError | KeyError | AttributeError)


def refusal_reason(error: BaseException) -> str:
    """Why the database refused a record: the error class and the database's message, never the SQL
    or its parameters (the record itself is kept beside the reason)."""
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    if isinstance(error, StatementError) and not isinstance(error, DBAPIError):
        cause = error.orig or error
    message = str(cause).split("\n", 1)[0].replace("\x00", "\\x00")
    return f"{type(error).__name__}: {message}"[:1000]
