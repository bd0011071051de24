"""A DNS for tests: the service's resolver is injected, so no test ever resolves a real name."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence

from service.outbound.pinned_transport import IPAddress

#: The example names the tests use, at public (documentation, RFC 5737) addresses.
PUBLIC_NAMES: Mapping[str, Sequence[str]] = {
    "ehr.example.org": ["203.0.113.10"],
    "fhir.example.org": ["203.0.113.20"],
    "other-ehr.example.org": ["203.0.113.30"],
}


class FakeDns:
    """Names to addresses; every lookup is recorded in ``lookups``; other names do not resolve."""

    def __init__(self, names: Mapping[str, Sequence[str]] = PUBLIC_NAMES) -> None:
        self.names = dict(names)
        self.lookups: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> tuple[IPAddress, ...]:
        self.lookups.append((host, port))
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: name not known")
        return tuple(ipaddress.ip_address(address) for address in self.names[host])
