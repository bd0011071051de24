"""Which FHIR servers the service reads: only those the calling client is known to own.

The service sends the request's ``fhirAuthorization`` token to its ``fhirServer``, so before the
first fetch :meth:`FhirServerGuard.approve` decides whether that server may be read (README
"Security"), first rule that refuses wins:

=================  ==========================================================================
rule (reason)      refused
=================  ==========================================================================
``scheme``         ``http://`` outside development mode, unless the server is on loopback and
                   ``fhir_allow_http_loopback`` is set (CDS Hooks 2.0: https for real data)
``not-registered`` the issuer lists ``fhir_servers`` and ``fhirServer`` is under none of them
                   (scheme, host, port and path prefix, segment-wise, as for ``next`` links)
``link-local``     an address in 169.254/16 or fe80::/10 (cloud metadata endpoints): always
``unspecified``    0.0.0.0/8 or ``::``: always
``multicast``      224/4 or ff00::/8: always
``reserved``       240/4 (broadcast included), ``::/96``, ``100::/64``: always
``private``        10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT), fc00::/7, fec0::/10: unless
                   the issuer lists ``fhir_servers``, development mode or ``fhir_allow_private``
``loopback``       127/8 or ``::1``: unless the issuer lists ``fhir_servers``, development mode,
                   ``fhir_allow_loopback`` or ``fhir_allow_http_loopback``
=================  ==========================================================================

Addresses are judged after name resolution (IPv4 inside IPv6, mapped, NAT64 or 6to4, is judged
as IPv4), every address of a name must pass, and the name is resolved once: the approved
addresses are pinned (:mod:`service.outbound.pinned_transport`) and the fetch connects to them only.
A refusal is a :class:`FhirServerRefusedError` (400, pointer ``/fhirServer``), counted in
``calf_cds_fhir_server_refusals_total{reason}``; a name that does not resolve is a
:class:`~cds_hooks.errors.FhirUnavailableError` (412), like a server that does not answer.

Only calls that fetch are checked: a call whose prefetch is complete never contacts
``fhirServer`` and sends its token nowhere, so it is answered whatever its ``fhirServer``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NoReturn

import httpx

from cds_hooks.errors import FhirUnavailableError, RequestError
from cds_hooks.fhir_urls import is_under, parse_base_url
from cds_hooks.models import HookRequest
from cds_hooks.prefetch_plan import Fetched, Fetcher, FetchPlan
from service.ops import telemetry
from service.outbound.addresses import ALWAYS_REFUSED, address_class, check_fhir_server_prefixes
from service.outbound.pinned_transport import IPAddress, Pin, Resolver, default_port, pinned, system_resolver

if TYPE_CHECKING:
    from service.auth.jwks import TrustedIssuer
    from service.config import Settings

__all__ = [
    "FhirServerGuard",
    "FhirServerRefusedError",
    "GuardedFetcher",
]

log = logging.getLogger("calf_cds.fhir_server_guard")

Reason = Literal[
    "scheme", "not-registered", "link-local", "unspecified", "multicast", "reserved", "private", "loopback"
]
_MESSAGES: Mapping[Reason, str] = {
    "scheme": "fhirServer must be https outside development mode (CDS Hooks 2.0); plain http is "
    "accepted only for a FHIR server on loopback with CALF_CDS_FHIR_ALLOW_HTTP_LOOPBACK",
    "not-registered": "fhirServer is not under any of the FHIR servers registered for this client "
    "(fhir_servers in the trusted-issuer file)",
    "link-local": "fhirServer resolves to a link-local address, which is never read",
    "unspecified": "fhirServer resolves to an unspecified address, which is never read",
    "multicast": "fhirServer resolves to a multicast address, which is never read",
    "reserved": "fhirServer resolves to a reserved address, which is never read",
    "private": "fhirServer resolves to a private-range address: register it in the client's "
    "fhir_servers, or set CALF_CDS_FHIR_ALLOW_PRIVATE",
    "loopback": "fhirServer resolves to a loopback address: register it in the client's "
    "fhir_servers, or set CALF_CDS_FHIR_ALLOW_LOOPBACK",
}


class FhirServerRefusedError(RequestError):
    """The service will not read this ``fhirServer``; ``reason`` names the rule (a metric label)."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(_MESSAGES[reason], pointer="/fhirServer")
        self.reason: Reason = reason


@dataclass(frozen=True)
class FhirServerGuard:
    """Approves a ``fhirServer`` for a client (the token's ``iss``) and pins its addresses.

    ``registered`` maps an issuer to its ``fhir_servers`` (issuers without a list are absent);
    ``resolver`` replaces DNS (tests never resolve real names); ``resolve_timeout`` in seconds.
    """

    dev: bool = False
    allow_private: bool = False
    allow_loopback: bool = False
    allow_http_loopback: bool = False
    registered: Mapping[str, tuple[httpx.URL, ...]] = field(default_factory=dict)
    resolver: Resolver = system_resolver
    resolve_timeout: float = 2.0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        issuers: Iterable[TrustedIssuer] = (),
        *,
        resolver: Resolver = system_resolver,
    ) -> FhirServerGuard:
        """The guard a service runs with: its settings and its trusted issuers' ``fhir_servers``."""
        return cls(
            dev=settings.dev,
            allow_private=settings.fhir_allow_private,
            allow_loopback=settings.fhir_allow_loopback,
            allow_http_loopback=settings.fhir_allow_http_loopback,
            registered={
                issuer.iss: check_fhir_server_prefixes(issuer.iss, issuer.fhir_servers)
                for issuer in issuers
                if issuer.fhir_servers is not None
            },
            resolver=resolver,
            resolve_timeout=settings.fhir_request_timeout,
        )

    def bind(self, fetcher: Fetcher, *, issuer: str | None, notes: list[str] | None = None) -> GuardedFetcher:
        """``fetcher``, reading only what this guard approves for ``issuer`` (``None``: no client,
        as in ``calf-cds try``); a refusal is noted in ``notes`` (the audit record's)."""
        return GuardedFetcher(fetcher, self, issuer, notes)

    async def approve(self, fhir_server: str, *, issuer: str | None) -> Pin:
        """The server's host, port and approved addresses, resolved once.

        :raises RequestError: for a ``fhirServer`` that is not a FHIR base URL (400).
        :raises FhirServerRefusedError: when a rule refuses it (400).
        :raises FhirUnavailableError: when its name does not resolve (412).
        """
        base = parse_base_url(fhir_server)
        registered = self.registered.get(issuer) if issuer is not None else None
        plain_http = base.scheme == "http" and not self.dev
        if plain_http and not self.allow_http_loopback:
            self._refuse("scheme", base, issuer)
        if registered is not None and not any(is_under(base, prefix) for prefix in registered):
            self._refuse("not-registered", base, issuer)
        host, port = base.raw_host.decode("ascii"), default_port(base)
        addresses = await self._resolve(host, port, base)
        trusted_target = registered is not None or self.dev
        for address in addresses:
            kind = address_class(address)
            if kind == "public":
                continue
            if kind in ALWAYS_REFUSED:
                self._refuse(kind, base, issuer)
            if kind == "private" and not (trusted_target or self.allow_private):
                self._refuse(kind, base, issuer)
            allow_loopback = self.allow_loopback or self.allow_http_loopback
            if kind == "loopback" and not (trusted_target or allow_loopback):
                self._refuse(kind, base, issuer)
        if plain_http and any(address_class(address) != "loopback" for address in addresses):
            self._refuse("scheme", base, issuer)
        return Pin(host, port, addresses)

    async def _resolve(self, host: str, port: int, base: httpx.URL) -> tuple[IPAddress, ...]:
        try:
            return (ipaddress.ip_address(host),)
        except ValueError:
            pass
        shown = str(base)
        try:
            async with asyncio.timeout(self.resolve_timeout):
                addresses = tuple(await self.resolver(host, port))
        except TimeoutError:
            raise FhirUnavailableError("the FHIR server's name did not resolve in time", url=shown) from None
        except OSError:
            raise FhirUnavailableError("the FHIR server's name does not resolve", url=shown) from None
        if not addresses:
            raise FhirUnavailableError("the FHIR server's name does not resolve", url=shown)
        return addresses

    def _refuse(self, reason: Reason, base: httpx.URL, issuer: str | None) -> NoReturn:
        telemetry.count_fhir_server_refusal(reason)
        log.warning("fhirServer refused (%s): host %r, issuer %r", reason, base.host[:253], issuer)
        raise FhirServerRefusedError(reason)


@dataclass(frozen=True)
class GuardedFetcher:
    """A :class:`~cds_hooks.prefetch_plan.Fetcher` that first has the guard approve ``fhirServer``,
    then fetches with its addresses pinned. Nothing is fetched, and no token is sent, before."""

    inner: Fetcher
    guard: FhirServerGuard
    issuer: str | None
    notes: list[str] | None = None

    async def __call__(self, request: HookRequest, plan: FetchPlan) -> Fetched:
        if request.fhir_server is None:
            return await self.inner(request, plan)
        try:
            pin = await self.guard.approve(request.fhir_server, issuer=self.issuer)
        except FhirServerRefusedError as error:
            if self.notes is not None:
                self.notes.append(f"fhirServer refused by the {error.reason!r} rule; nothing was fetched")
            raise
        with pinned(pin):
            return await self.inner(request, plan)
