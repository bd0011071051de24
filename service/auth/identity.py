"""Who called: the verified identity of a CDS Client, and what the audit trail keeps of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["ClientIdentity", "client_record"]


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Who called: the verified claims of an accepted token (safe to log; the token is not)."""

    iss: str
    sub: str | None
    tenant: str | None
    jti: str
    kid: str
    alg: str
    expires_at: datetime


def client_record(identity: ClientIdentity) -> dict[str, str]:
    """What the audit trail keeps of the caller: never the token."""
    record = {"iss": identity.iss, "jti": identity.jti, "kid": identity.kid}
    if identity.sub is not None:
        record["sub"] = identity.sub
    if identity.tenant is not None:
        record["tenant"] = identity.tenant
    return record
