"""Which FHIR servers the guard approves: scheme, per-issuer allowlist, address classes after DNS.

Every name is resolved by a :class:`~tests.fake_dns.FakeDns`; no test resolves a real name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from cds_hooks.errors import FhirUnavailableError, RequestError
from service.auth.jwks import load_trusted_issuers
from service.hooks.fhir_server_guard import (
    FhirServerGuard,
    FhirServerRefusedError,
)
from service.outbound.addresses import address_class, check_fhir_server_prefixes
from service.outbound.pinned_transport import IPAddress
from tests.fake_dns import FakeDns

pytestmark = pytest.mark.anyio

EHR = "https://ehr.example.org/"
REGISTERED = "https://ehr.example.org/fhir"
NAMES = {
    "ehr.example.org": ["203.0.113.10"],
    "ehr.example.org.evil.test": ["203.0.113.66"],
    "metadata.evil.test": ["169.254.169.254"],
    "mapped.evil.test": ["::ffff:169.254.169.254"],
    "internal.example.org": ["10.1.2.3"],
    "cgnat.example.org": ["100.64.0.7"],
    "ula.example.org": ["fd00:ec2::254"],
    "localhost": ["127.0.0.1", "::1"],
    "split.evil.test": ["203.0.113.10", "192.168.1.20"],
    "zero.evil.test": ["0.0.0.0"],  # noqa: S104 -- a target, not a bind
    "multicast.evil.test": ["239.1.2.3"],
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def dns() -> FakeDns:
    return FakeDns(NAMES)


def guard(dns: FakeDns, **options: object) -> FhirServerGuard:
    """A production guard (not development mode) with EHR's FHIR server registered."""
    registered = {EHR: check_fhir_server_prefixes(EHR, [REGISTERED])}
    return FhirServerGuard(registered=registered, resolver=dns, **options)  # type: ignore[arg-type]


async def refusal(guard: FhirServerGuard, url: str, issuer: str | None = None) -> str:
    with pytest.raises(FhirServerRefusedError) as refused:
        await guard.approve(url, issuer=issuer)
    assert refused.value.pointer == "/fhirServer"
    return refused.value.reason


# --------------------------------------------------------------------------------------------
# Address classes


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("203.0.113.10", "public"),
        ("8.8.8.8", "public"),
        ("2606:4700::1111", "public"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of 169.254.169.254
        ("0.0.0.0", "unspecified"),  # noqa: S104 -- a target, not a bind
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("172.32.0.1", "public"),
        ("192.168.0.1", "private"),
        ("100.64.0.1", "private"),
        ("100.128.0.1", "public"),
        ("fc00::1", "private"),
        ("fd00:ec2::254", "private"),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
    ],
)
def test_address_classes(address: str, kind: str) -> None:
    """Each address falls in the class the guard's table gives it."""
    parsed: IPAddress = ipaddress.ip_address(address)
    assert address_class(parsed) == kind


# --------------------------------------------------------------------------------------------
# Scheme


async def test_https_name_is_approved_with_its_addresses_resolved_once(dns: FakeDns) -> None:
    """An https server at a public address is approved; its name was looked up exactly once."""
    pin = await guard(dns).approve("https://ehr.example.org/fhir", issuer=None)
    assert (pin.host, pin.port, pin.addresses) == (
        "ehr.example.org",
        443,
        (ipaddress.ip_address("203.0.113.10"),),
    )
    assert dns.lookups == [("ehr.example.org", 443)]


async def test_http_is_refused_outside_development_before_any_lookup(dns: FakeDns) -> None:
    """Plain http outside development mode: refused by the `scheme` rule, DNS never asked."""
    assert await refusal(guard(dns), "http://ehr.example.org/fhir", EHR) == "scheme"
    assert dns.lookups == []


async def test_http_is_accepted_in_development_mode(dns: FakeDns) -> None:
    """Development mode accepts plain http (the Sandbox's loopback FHIR server uses it)."""
    pin = await guard(dns, dev=True).approve("http://localhost:8090/fhir", issuer=None)
    assert pin.port == 8090


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8090/fhir", "http://localhost:8090/fhir", "http://[::1]/fhir"]
)
async def test_http_loopback_is_accepted_with_its_setting(dns: FakeDns, url: str) -> None:
    """`fhir_allow_http_loopback` accepts plain http to a server whose addresses are all loopback."""
    pin = await guard(dns, allow_http_loopback=True).approve(url, issuer=None)
    assert all(address.is_loopback for address in pin.addresses)


async def test_http_loopback_without_its_setting_is_refused(dns: FakeDns) -> None:
    """Loopback alone is not enough for plain http: the setting must say so."""
    assert await refusal(guard(dns, allow_loopback=True), "http://127.0.0.1:8090/fhir") == "scheme"


@pytest.mark.parametrize("url", ["http://ehr.example.org/fhir", "http://10.1.2.3/fhir"])
async def test_http_loopback_setting_does_not_open_other_hosts(dns: FakeDns, url: str) -> None:
    """`fhir_allow_http_loopback` allows loopback only: plain http elsewhere is still refused."""
    allowing = guard(dns, allow_http_loopback=True, allow_private=True)
    assert await refusal(allowing, url) == "scheme"


# --------------------------------------------------------------------------------------------
# The issuer's fhir_servers


@pytest.mark.parametrize(
    "url",
    ["https://ehr.example.org/fhir", "https://ehr.example.org/fhir/", "https://EHR.example.org/fhir/r4"],
)
async def test_a_registered_prefix_is_approved(dns: FakeDns, url: str) -> None:
    """A fhirServer at or under a registered base URL is approved for that issuer."""
    pin = await guard(dns).approve(url, issuer=EHR)
    assert pin.host == "ehr.example.org"


@pytest.mark.parametrize(
    "url",
    [
        "https://ehr.example.org.evil.test/fhir",  # a look-alike host
        "https://ehr.example.org:8443/fhir",  # another port
        "https://ehr.example.org/fhir2",  # another path prefix that starts the same
        "https://ehr.example.org/",  # above the registered prefix
        "https://ehr.example.org/other/fhir",
        "https://ehr.example.org/fhir/%2e%2e/admin",  # an encoded dot segment
    ],
)
async def test_a_look_alike_of_a_registered_prefix_is_refused(dns: FakeDns, url: str) -> None:
    """Anything not under a registered prefix (scheme, host, port, path segments) is refused,
    before its name is resolved."""
    assert await refusal(guard(dns), url, EHR) == "not-registered"
    assert dns.lookups == []


async def test_another_issuer_is_not_bound_by_the_list(dns: FakeDns) -> None:
    """The list binds its own issuer only: another client's public server is approved."""
    pin = await guard(dns).approve("https://ehr.example.org.evil.test/fhir", issuer="https://other/")
    assert pin.host == "ehr.example.org.evil.test"


async def test_a_registered_server_may_be_internal(dns: FakeDns) -> None:
    """A server the operator registered may sit in a private range or on loopback."""
    registered = {
        EHR: check_fhir_server_prefixes(EHR, ["https://internal.example.org/fhir", "https://localhost/fhir"])
    }
    strict = FhirServerGuard(registered=registered, resolver=dns)
    await strict.approve("https://internal.example.org/fhir", issuer=EHR)
    await strict.approve("https://localhost/fhir", issuer=EHR)


async def test_a_registered_name_that_now_resolves_to_link_local_is_refused(dns: FakeDns) -> None:
    """Registration does not vouch for link-local: a registered name moved to 169.254.169.254 is refused."""
    dns.names["ehr.example.org"] = ["169.254.169.254"]
    assert await refusal(guard(dns), REGISTERED, EHR) == "link-local"


# --------------------------------------------------------------------------------------------
# Addresses after resolution (no list)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[fe80::1]/fhir", "link-local"),
        ("https://metadata.evil.test/fhir", "link-local"),
        ("https://mapped.evil.test/fhir", "link-local"),
        ("https://0.0.0.0/fhir", "unspecified"),
        ("https://zero.evil.test/fhir", "unspecified"),
        ("https://[::]/fhir", "unspecified"),
        ("https://multicast.evil.test/fhir", "multicast"),
        ("https://10.1.2.3/fhir", "private"),
        ("https://internal.example.org/fhir", "private"),
        ("https://cgnat.example.org/fhir", "private"),
        ("https://ula.example.org/fhir", "private"),
        ("https://split.evil.test/fhir", "private"),  # one bad address is enough
        ("https://127.0.0.1/fhir", "loopback"),
        ("https://localhost/fhir", "loopback"),
        ("https://[::1]/fhir", "loopback"),
    ],
)
async def test_internal_targets_are_refused_without_a_list(dns: FakeDns, url: str, reason: str) -> None:
    """Without fhir_servers, link-local, unspecified, multicast, private and loopback targets are
    refused, whether named by address or by a name that resolves to one."""
    assert await refusal(guard(dns), url) == reason


async def test_private_targets_are_accepted_with_their_setting(dns: FakeDns) -> None:
    """`fhir_allow_private` opens the private ranges, and nothing else."""
    allowing = guard(dns, allow_private=True)
    await allowing.approve("https://internal.example.org/fhir", issuer=None)
    assert await refusal(allowing, "https://localhost/fhir") == "loopback"
    assert await refusal(allowing, "https://metadata.evil.test/fhir") == "link-local"


async def test_loopback_targets_are_accepted_with_their_setting(dns: FakeDns) -> None:
    """`fhir_allow_loopback` opens loopback, and nothing else."""
    allowing = guard(dns, allow_loopback=True)
    await allowing.approve("https://localhost/fhir", issuer=None)
    assert await refusal(allowing, "https://internal.example.org/fhir") == "private"


async def test_development_mode_accepts_internal_but_never_link_local(dns: FakeDns) -> None:
    """Development mode accepts loopback and private servers; link-local stays refused."""
    dev = guard(dns, dev=True)
    await dev.approve("https://internal.example.org/fhir", issuer=None)
    await dev.approve("http://127.0.0.1:8090/fhir", issuer=None)
    assert await refusal(dev, "http://metadata.evil.test/fhir") == "link-local"


# --------------------------------------------------------------------------------------------
# Names that do not resolve, bad URLs, metrics


async def test_a_name_that_does_not_resolve_is_unavailable(dns: FakeDns) -> None:
    """A name without addresses is a 412-class failure (like a server that does not answer)."""
    with pytest.raises(FhirUnavailableError, match="does not resolve"):
        await guard(dns).approve("https://nowhere.example.org/fhir", issuer=None)


async def test_a_slow_resolver_costs_the_timeout_only() -> None:
    """A resolver that hangs is given up after `resolve_timeout`."""

    async def hang(host: str, port: int) -> tuple[IPAddress, ...]:
        await asyncio.sleep(30)
        return ()

    with pytest.raises(FhirUnavailableError, match="did not resolve in time"):
        await FhirServerGuard(resolver=hang, resolve_timeout=0.05).approve(
            "https://slow.example.org", issuer=None
        )


async def test_a_url_that_is_no_fhir_base_is_a_request_error(dns: FakeDns) -> None:
    """Credentials, a query or another scheme in fhirServer: 400 at /fhirServer, as before."""
    for url in (
        "https://user:pw@ehr.example.org/fhir",
        "https://ehr.example.org/fhir?x=1",
        "ftp://ehr.example.org",
    ):
        with pytest.raises(RequestError) as error:
            await guard(dns).approve(url, issuer=None)
        assert error.value.pointer == "/fhirServer"
        assert not isinstance(error.value, FhirServerRefusedError)


async def test_refusals_are_counted_by_reason(dns: FakeDns) -> None:
    """Each refusal adds one to calf_cds_fhir_server_refusals_total for its rule."""
    from prometheus_client import REGISTRY

    def count(reason: str) -> float:
        value = REGISTRY.get_sample_value("calf_cds_fhir_server_refusals_total", {"reason": reason})
        return value or 0.0

    before = count("link-local"), count("scheme")
    await refusal(guard(dns), "https://metadata.evil.test/fhir")
    await refusal(guard(dns), "http://ehr.example.org/fhir")
    assert (count("link-local"), count("scheme")) == (before[0] + 1, before[1] + 1)


# --------------------------------------------------------------------------------------------
# The trusted-issuer file


def test_trusted_issuer_file_takes_fhir_servers(tmp_path: Path) -> None:
    """`fhir_servers` in the trusted-issuer file reaches the guard, as parsed base URLs."""
    from tests.service.jwt_factory import SigningKey, jwks

    path = tmp_path / "issuers.json"
    entry = {
        "iss": EHR,
        "jwks": jwks(SigningKey.es384()),
        "fhir_servers": [REGISTERED, "https://ehr.example.org:9443/r4/"],
    }
    path.write_text(json.dumps({"issuers": [entry, {"iss": "https://other/", "jwks": entry["jwks"]}]}))
    issuers = load_trusted_issuers(path)
    from service.config import Settings

    built = FhirServerGuard.from_settings(Settings(data_dir=tmp_path), issuers)
    assert built.registered == {
        EHR: (httpx.URL("https://ehr.example.org/fhir"), httpx.URL("https://ehr.example.org:9443/r4"))
    }


@pytest.mark.parametrize(
    "servers",
    [
        [],
        ["http://ehr.example.org/fhir"],
        ["https://ehr.example.org/fhir?tenant=1"],
        ["https://user@ehr.example.org/fhir"],
        ["ehr.example.org/fhir"],
    ],
)
def test_trusted_issuer_file_refuses_bad_fhir_servers(tmp_path: Path, servers: list[str]) -> None:
    """An empty list, plain http off loopback, a query, credentials or a relative URL stop the load."""
    from tests.service.jwt_factory import SigningKey, jwks

    path = tmp_path / "issuers.json"
    path.write_text(
        json.dumps({"issuers": [{"iss": EHR, "jwks": jwks(SigningKey.es384()), "fhir_servers": servers}]})
    )
    with pytest.raises(ValidationError, match="fhir_servers"):
        load_trusted_issuers(path)


def test_trusted_issuer_file_accepts_http_on_loopback() -> None:
    """Plain http is allowed in the list for a loopback server (it still needs the http setting)."""
    assert check_fhir_server_prefixes(EHR, ["http://127.0.0.1:8090/fhir", "http://localhost/fhir"])
