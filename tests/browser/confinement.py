"""Headless Chromium for the browser tests, confined to loopback, and the net-log check that proves it.

Tests may talk to loopback only. Chromium gets the flags of ``../shared/tools/sandbox-e2e/run.sh``
(the CDS Hooks Sandbox driver, which runs the same check): host-resolver rules that make every
host but 127.0.0.1 and localhost unresolvable (so no DNS query and no connection leaves the
machine), no proxy, and its background services (component and model updates, metrics, sync,
network time, translate, autofill, phishing detection, media router, first run, default apps)
switched off. Every run writes a net log (``--log-net-log``); :func:`confinement` reads it and
:func:`assert_stayed_on_loopback` fails the test if Chromium connected to, sent a datagram to, or
got an answer from any address outside loopback. What is still *attempted* and refused inside the
browser, before any DNS query (``accounts.google.com/ListAccounts`` at start-up, which no flag
turns off), is counted but is no leak; so is the UDP socket Chromium ``connect()``s to a public
IPv6 address to learn whether IPv6 is routable, which sends nothing.

:func:`require_chromium` skips a browser test where Chromium is not installed, and fails it where
``scripts/test.sh`` installed it (``CALF_CDS_TEST_REQUIRE_BROWSER``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRE_ENV = "CALF_CDS_TEST_REQUIRE_BROWSER"

# The same confinement as ../shared/tools/sandbox-e2e/run.sh (CHROME_FLAGS), less its window size.
OFFLINE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
    "--no-proxy-server",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--no-pings",
    "--disable-field-trial-config",
    "--password-store=basic",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater,NetworkTimeServiceQuerying,"
    "InterestFeedContentSuggestions",
)


def require_chromium() -> str:
    """The Chromium executable; skips the test where there is none (fails where one was installed)."""
    if CHROMIUM is None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail("scripts/test.sh installed Chromium, but it is not on PATH")
        pytest.skip("chromium is not installed (scripts/test.sh installs Debian's chromium)")
    return CHROMIUM


def run_chromium(profile: Path, net_log: Path, *args: str, timeout: float = 120) -> str:
    """Run headless Chromium confined to loopback with a fresh ``profile``; its stdout.

    The net log goes to ``net_log``; call :func:`assert_stayed_on_loopback` on it afterwards.
    """
    executable = require_chromium()
    profile.mkdir(parents=True, exist_ok=True)
    # A manifest that does not exist: the on-device model manifest is never requested (run.sh does the same).
    no_manifest = profile / "no-on-device-model-manifest"
    command = [executable, *OFFLINE_FLAGS, f"--optimization-guide-manifest-override={no_manifest}",
               f"--user-data-dir={profile}", f"--log-net-log={net_log}", *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


# -- the net-log check ------------------------------------------------------------------------------


def load_net_log(path: Path) -> dict[str, Any] | None:
    """A Chromium net log; one cut short when Chromium exited is completed so that it parses."""
    try:
        raw = path.read_text("utf-8", errors="replace")
    except OSError:
        return None
    for ending in ("", "]}", "{}]}"):
        try:
            document = json.loads(raw.rstrip().rstrip(",") + ending if ending else raw)
        except ValueError:
            continue
        return document if isinstance(document, dict) else None
    return None


def is_loopback_host(host: str | None) -> bool:
    host = (host or "").strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _address_host(address: str) -> str:
    """'127.0.0.1:443' -> '127.0.0.1'; '[::1]:443' -> '::1'."""
    if address.startswith("["):
        return address[1 : address.find("]")]
    return address.rsplit(":", 1)[0]


@dataclass
class Confinement:
    """What one net log shows of Chromium's traffic outside loopback."""

    requests_elsewhere: int = 0
    refused_by_resolver: int = 0
    tcp_connects: int = 0
    tcp_connects_elsewhere: list[str] = field(default_factory=list)
    udp_route_probes: list[str] = field(default_factory=list)
    udp_sent_elsewhere: list[str] = field(default_factory=list)
    answered_elsewhere: list[str] = field(default_factory=list)
    unfinished_elsewhere: list[str] = field(default_factory=list)

    @property
    def leak(self) -> bool:
        return bool(self.tcp_connects_elsewhere or self.udp_sent_elsewhere or self.answered_elsewhere)


def _event_types(log: dict[str, Any]) -> dict[int, str]:
    constants = log.get("constants", {}).get("logEventTypes", {})
    return {number: name for name, number in constants.items()}


def confinement(log: dict[str, Any]) -> Confinement:
    """Requests to other hosts must fail with ERR_NAME_NOT_RESOLVED (-105, the resolver rule);
    TCP connects and UDP datagrams must all go to loopback."""
    types = _event_types(log)
    result = Confinement()
    requests: dict[int, dict[str, Any]] = {}
    udp: dict[int, str] = {}
    sent: dict[int, int] = {}
    for event in log.get("events", []):
        kind = types.get(event.get("type"), event.get("type"))
        source = (event.get("source") or {}).get("id")
        params = event.get("params") or {}
        if kind == "URL_REQUEST_START_JOB" and "url" in params:
            requests.setdefault(source, {"url": params["url"], "status": None})
        elif source in requests and requests[source]["status"] is None:
            if kind in (
                "HTTP_TRANSACTION_READ_RESPONSE_HEADERS",
                "URL_REQUEST_FAKE_RESPONSE_HEADERS_CREATED",
            ):
                headers = params.get("headers")
                if headers:
                    requests[source]["status"] = headers[0] if isinstance(headers, list) else str(headers)
            elif params.get("net_error"):
                requests[source]["status"] = params["net_error"]
        if kind == "TCP_CONNECT_ATTEMPT" and "address" in params:
            result.tcp_connects += 1
            if not is_loopback_host(_address_host(str(params["address"]))):
                result.tcp_connects_elsewhere.append(str(params["address"]))
        elif kind == "UDP_CONNECT" and "address" in params:
            udp[source] = str(params["address"])
        elif kind == "UDP_BYTES_SENT":
            sent[source] = sent.get(source, 0) + 1
    for request in requests.values():
        parts = urllib.parse.urlsplit(request["url"])
        if parts.scheme not in ("http", "https", "ws", "wss") or is_loopback_host(parts.hostname):
            continue
        result.requests_elsewhere += 1
        if request["status"] == -105:  # ERR_NAME_NOT_RESOLVED: refused by the host-resolver rule
            result.refused_by_resolver += 1
        elif request["status"] is None:
            result.unfinished_elsewhere.append(request["url"][:120])
        else:
            result.answered_elsewhere.append(f"{request['url'][:120]} -> {request['status']}")
    for source, address in udp.items():
        if not is_loopback_host(_address_host(address)):
            (result.udp_sent_elsewhere if sent.get(source) else result.udp_route_probes).append(address)
    return result


def assert_stayed_on_loopback(net_log: Path) -> Confinement:
    """Fail the test if the net log is missing or shows traffic beyond loopback."""
    log = load_net_log(net_log)
    assert log is not None, f"Chromium wrote no readable net log at {net_log}"
    result = confinement(log)
    assert not result.leak, f"Chromium reached beyond loopback: {result}"
    return result
