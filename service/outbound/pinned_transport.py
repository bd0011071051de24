"""Resolve a FHIR server's name once, then connect only to the addresses that were checked.

A check on a host *name* proves little if the connection resolves the name again: its DNS answer
can change in between (DNS rebinding), from a public address to 169.254.169.254. So the
:class:`~service.hooks.fhir_server_guard.FhirServerGuard` resolves the name with a :data:`Resolver`,
checks every address, and pins the approved ones for the current task with :func:`pinned`;
:class:`PinnedTransport` then sends each request to a pinned address and never resolves anything:

- the request's URL host is replaced by the pinned IP address, so the connection pool keys its
  connections by that address (a connection is never reused for an address not pinned now);
- the ``Host`` header keeps the name, and TLS keeps it too (``sni_hostname``): the certificate is
  verified for the name, as without pinning;
- a host and port with no pin is refused before any connection (fails closed), so the token never
  goes to a server the guard did not approve, a ``next`` link to another host included.

Pins live in a :class:`contextvars.ContextVar`: tasks a fetch starts (one per prefetch key) inherit
them, and concurrent hook calls never see each other's. One transport may serve every call.
"""

from __future__ import annotations

import contextvars
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType

import anyio
import httpx

__all__ = ["IPAddress", "Pin", "PinnedTransport", "Resolver", "default_port", "pinned", "system_resolver"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(host, port) -> addresses``: what a name resolves to (``OSError`` when it does not).
Resolver = Callable[[str, int], Awaitable[tuple[IPAddress, ...]]]

_PINS: contextvars.ContextVar[Mapping[tuple[str, int], tuple[IPAddress, ...]]] = contextvars.ContextVar(
    "calf_cds_fhir_pins", default=MappingProxyType({})
)


@dataclass(frozen=True, slots=True)
class Pin:
    """The approved addresses of one FHIR server (``host`` as in its URL, IDNA-encoded)."""

    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def default_port(url: httpx.URL) -> int:
    """The URL's port, or its scheme's default (httpx leaves default ports out)."""
    return url.port or (443 if url.scheme == "https" else 80)


async def system_resolver(host: str, port: int) -> tuple[IPAddress, ...]:
    """The host's addresses from the operating system's resolver, each once, in its order."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OSError(f"{host} has no address")
    return tuple(addresses)


@contextmanager
def pinned(pin: Pin) -> Iterator[None]:
    """Within this block (and tasks started in it), ``pin.host:pin.port`` means ``pin.addresses``."""
    token = _PINS.set({**_PINS.get(), (pin.host, pin.port): pin.addresses})
    try:
        yield
    finally:
        _PINS.reset(token)


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects only to the addresses pinned for a request's host.

    ``verify`` is the TLS verification (an ``SSLContext`` in tests); ``inner`` replaces the
    transport that does the HTTP once the address is chosen. Addresses are tried in order while
    connecting fails; once connected, the answer (or error) is final.
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport(verify=verify, trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.raw_host.decode("ascii")
        addresses = _PINS.get().get((host, default_port(url)))
        if not addresses:
            raise httpx.ConnectError("no approved address for this FHIR server", request=request)
        failure = httpx.ConnectError("no approved address of this FHIR server answered", request=request)
        for address in addresses:
            extensions = dict(request.extensions)
            if _is_name(host):
                extensions["sni_hostname"] = host  # TLS: verify the certificate for the name
            direct = httpx.Request(
                request.method,
                url.copy_with(host=str(address)),
                headers=request.headers,  # Host: the name, set when the request was built
                stream=request.stream,
                extensions=extensions,
            )
            try:
                return await self._inner.handle_async_request(direct)
            except httpx.ConnectError as error:
                failure = error
        raise failure

    async def aclose(self) -> None:
        await self._inner.aclose()


def _is_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False
