"""What kind of network address a URL points at, judged after name resolution.

The FHIR-server guard (``service.hooks.fhir_server_guard``) and the trusted-issuer file
(``service.auth.jwks``: an issuer's ``fhir_servers``) both judge targets here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Literal

import httpx

from cds_hooks.errors import RequestError
from cds_hooks.fhir_urls import parse_base_url
from service.outbound.pinned_transport import IPAddress

__all__ = [
    "ALWAYS_REFUSED",
    "AddressClass",
    "address_class",
    "check_fhir_server_prefixes",
    "is_loopback_host",
]

AddressClass = Literal["public", "link-local", "unspecified", "multicast", "reserved", "private", "loopback"]

_CIDRS: tuple[tuple[AddressClass, str], ...] = (
    ("unspecified", "0.0.0.0/8"),
    ("loopback", "127.0.0.0/8"),
    ("link-local", "169.254.0.0/16"),
    ("private", "10.0.0.0/8"),
    ("private", "172.16.0.0/12"),
    ("private", "192.168.0.0/16"),
    ("private", "100.64.0.0/10"),
    ("multicast", "224.0.0.0/4"),
    ("reserved", "240.0.0.0/4"),
    ("unspecified", "::/128"),
    ("loopback", "::1/128"),
    ("reserved", "::/96"),  # IPv4-compatible (deprecated)
    ("reserved", "100::/64"),  # discard-only
    ("link-local", "fe80::/10"),
    ("private", "fec0::/10"),  # site-local (deprecated)
    ("private", "fc00::/7"),
    ("multicast", "ff00::/8"),
)
_NETWORKS = tuple((kind, ipaddress.ip_network(cidr)) for kind, cidr in _CIDRS)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOOPBACK_NAMES = frozenset({"localhost"})
ALWAYS_REFUSED: frozenset[AddressClass] = frozenset({"link-local", "unspecified", "multicast", "reserved"})


def address_class(address: IPAddress) -> AddressClass:
    """What kind of target ``address`` is; IPv4 carried inside IPv6 is judged as that IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_class(embedded)
    for kind, network in _NETWORKS:
        if address.version == network.version and address in network:
            return kind
    return "public"


def check_fhir_server_prefixes(iss: str, prefixes: Iterable[str]) -> tuple[httpx.URL, ...]:
    """A trusted issuer's ``fhir_servers``: FHIR base URLs, https (plain http only on loopback).

    :raises ValueError: for an empty list or an entry that cannot be a FHIR base URL.
    """
    parsed: list[httpx.URL] = []
    for prefix in prefixes:
        try:
            url = parse_base_url(prefix)
        except RequestError:
            raise ValueError(
                f"issuer {iss!r}: fhir_servers entry {prefix!r} is not an absolute http(s) URL "
                "without credentials, query or fragment"
            ) from None
        if url.scheme != "https" and not is_loopback_host(url.host):
            raise ValueError(
                f"issuer {iss!r}: fhir_servers entry {prefix!r} must be https (http only on loopback)"
            )
        parsed.append(url)
    if not parsed:
        raise ValueError(f"issuer {iss!r}: fhir_servers must be null (no list) or a non-empty list")
    return tuple(parsed)


def is_loopback_host(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return address_class(ipaddress.ip_address(host)) == "loopback"
    except ValueError:
        return False
