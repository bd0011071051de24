"""The resolve-once transport against real servers on loopback, over plain http and over TLS.

The FHIR server's name is ``fhir.test`` (a reserved name no real DNS answers): the fake resolver
maps it to 127.0.0.1, so a request that reaches the server proves the transport connected to
the approved address and did not resolve the name again.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.hooks.fhir_server_guard import FhirServerGuard
from service.outbound.pinned_transport import Pin, PinnedTransport, pinned
from tests.fake_dns import FakeDns

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

NAME = "fhir.test"
# Certificates valid from 2000 to 9999, so that no test depends on today's date.
NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(9999, 12, 31, tzinfo=datetime.UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Seen:
    """What the loopback server saw: the request paths with their Host header, and TLS names."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    seen: Seen

    def do_GET(self) -> None:
        self.seen.requests.append((self.path, self.headers.get("Host", "")))
        body = b'{"resourceType": "CapabilityStatement"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Server:
    port: int
    seen: Seen


@contextmanager
def serve(tls: ssl.SSLContext | None) -> Iterator[Server]:
    """A threaded HTTP server on 127.0.0.1 (a free port), over TLS with ``tls``."""
    seen = Seen()
    handler = type("Handler", (_Handler,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        tls.sni_callback = lambda _socket, name, _context: seen.server_names.append(name)  # type: ignore[assignment,misc]
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(httpd.server_address[1], seen)  # type: ignore[arg-type]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Pki:
    """A test CA and a server certificate it signed for ``dns_name``."""

    client: ssl.SSLContext
    server: ssl.SSLContext

    @classmethod
    def create(cls, folder: Path, dns_name: str) -> Pki:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("calf-cds test CA"))
            .issuer_name(_name("calf-cds test CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOT_BEFORE)
            .not_valid_after(NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name(dns_name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOT_BEFORE)
            .not_valid_after(NOT_AFTER)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        cert_file, key_file = folder / "server.pem", folder / "server.key"
        cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert_file, key_file)
        client = ssl.create_default_context(
            cadata=ca.public_bytes(serialization.Encoding.PEM).decode("ascii")
        )
        return cls(client=client, server=server)


@pytest.fixture
def http_server() -> Iterator[Server]:
    with serve(None) as server:
        yield server


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path, NAME)


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[Server]:
    with serve(pki.server) as server:
        yield server


def loopback_dns() -> FakeDns:
    return FakeDns({NAME: ["127.0.0.1"]})


async def get(transport: PinnedTransport, url: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        return await client.get(url)


# --------------------------------------------------------------------------------------------


async def test_requests_reach_the_approved_address_with_the_name_in_host(http_server: Server) -> None:
    """The name resolved once by the guard is never resolved again: every request of the call
    reaches the approved address with `Host` unchanged, even after DNS moves the name."""
    dns = loopback_dns()
    base = f"http://{NAME}:{http_server.port}/fhir"
    pin = await FhirServerGuard(allow_http_loopback=True, resolver=dns).approve(base, issuer=None)
    dns.names[NAME] = ["169.254.169.254"]  # rebinding after the check
    async with httpx.AsyncClient(transport=PinnedTransport(), trust_env=False) as client:
        with pinned(pin):
            for path in ("metadata", "Patient/p1", "Observation?patient=p1"):
                assert (await client.get(f"{base}/{path}")).status_code == 200
    assert dns.lookups == [(NAME, http_server.port)]
    assert [host for _, host in http_server.seen.requests] == [f"{NAME}:{http_server.port}"] * 3


async def test_tls_is_verified_for_the_name_not_the_address(pki: Pki, tls_server: Server) -> None:
    """Over https the connection goes to the pinned address, but TLS sends the name (SNI) and
    checks the certificate against it."""
    pin = Pin(NAME, tls_server.port, (ipaddress.ip_address("127.0.0.1"),))
    with pinned(pin):
        response = await get(
            PinnedTransport(verify=pki.client), f"https://{NAME}:{tls_server.port}/fhir/metadata"
        )
    assert response.status_code == 200
    assert tls_server.seen.server_names == [NAME]
    assert tls_server.seen.requests == [("/fhir/metadata", f"{NAME}:{tls_server.port}")]


async def test_a_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    """A server whose certificate is for another name fails verification: nothing is sent."""
    other = Pki.create(tmp_path, "other.test")
    with serve(other.server) as server:
        pin = Pin(NAME, server.port, (ipaddress.ip_address("127.0.0.1"),))
        with pinned(pin), pytest.raises(httpx.ConnectError):
            await get(PinnedTransport(verify=other.client), f"https://{NAME}:{server.port}/fhir/metadata")
        assert server.seen.requests == []


async def test_without_a_pin_nothing_is_connected(http_server: Server) -> None:
    """A host, or a port, with no approved address is refused before any connection."""
    url = f"http://127.0.0.1:{http_server.port}/fhir/metadata"
    with pytest.raises(httpx.ConnectError, match="no approved address"):
        await get(PinnedTransport(), url)
    with (
        pinned(Pin("127.0.0.1", http_server.port + 1, (ipaddress.ip_address("127.0.0.1"),))),
        pytest.raises(httpx.ConnectError, match="no approved address"),
    ):
        await get(PinnedTransport(), url)
    assert http_server.seen.requests == []


async def test_approved_addresses_are_tried_in_order(http_server: Server) -> None:
    """When the first approved address refuses the connection, the next one is tried."""
    addresses = (ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("127.0.0.1"))
    with pinned(Pin(NAME, http_server.port, addresses)):
        response = await get(PinnedTransport(), f"http://{NAME}:{http_server.port}/fhir/metadata")
    assert response.status_code == 200
    assert len(http_server.seen.requests) == 1
