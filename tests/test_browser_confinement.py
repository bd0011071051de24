"""The net-log check of tests/browser/confinement.py: what counts as leaving loopback, on small net logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser.confinement import assert_stayed_on_loopback, confinement

TYPES = {
    "URL_REQUEST_START_JOB": 1,
    "HTTP_TRANSACTION_READ_RESPONSE_HEADERS": 2,
    "TCP_CONNECT_ATTEMPT": 3,
    "UDP_CONNECT": 4,
    "UDP_BYTES_SENT": 5,
    "URL_REQUEST_DELEGATE_RESPONSE_STARTED": 6,
}


def event(kind: str, source: int, **params: Any) -> dict[str, Any]:
    return {"type": TYPES[kind], "source": {"id": source}, "params": params}


def net_log(*events: dict[str, Any]) -> dict[str, Any]:
    return {"constants": {"logEventTypes": TYPES}, "events": list(events)}


def test_loopback_traffic_and_refused_lookups_are_no_leak() -> None:
    """Loopback requests, and a request to another host refused by the resolver rule (-105)."""
    log = net_log(
        event("URL_REQUEST_START_JOB", 1, url="http://127.0.0.1:8080/cds-services", method="GET"),
        event("TCP_CONNECT_ATTEMPT", 1, address="127.0.0.1:8080"),
        event("HTTP_TRANSACTION_READ_RESPONSE_HEADERS", 1, headers=["HTTP/1.1 200 OK"]),
        event("URL_REQUEST_START_JOB", 2, url="https://accounts.google.com/ListAccounts", method="POST"),
        event("URL_REQUEST_DELEGATE_RESPONSE_STARTED", 2, net_error=-105),
        event("UDP_CONNECT", 3, address="[2001:4860:4860::8888]:53"),
    )
    result = confinement(log)
    assert not result.leak
    assert (result.requests_elsewhere, result.refused_by_resolver) == (1, 1)
    assert result.udp_route_probes == ["[2001:4860:4860::8888]:53"]


@pytest.mark.parametrize(
    "events",
    [
        [event("TCP_CONNECT_ATTEMPT", 1, address="93.184.215.14:443")],
        [event("TCP_CONNECT_ATTEMPT", 1, address="[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:443")],
        [event("UDP_CONNECT", 1, address="192.0.2.1:53"), event("UDP_BYTES_SENT", 1, byte_count=40)],
        [
            event("URL_REQUEST_START_JOB", 1, url="https://example.org/", method="GET"),
            event("HTTP_TRANSACTION_READ_RESPONSE_HEADERS", 1, headers=["HTTP/1.1 200 OK"]),
        ],
        [
            event("URL_REQUEST_START_JOB", 1, url="https://example.org/", method="GET"),
            event("URL_REQUEST_DELEGATE_RESPONSE_STARTED", 1, net_error=-102),
        ],
    ],
    ids=["tcp-v4", "tcp-v6", "udp-datagram", "answered", "connection-refused-elsewhere"],
)
def test_anything_beyond_loopback_is_a_leak(tmp_path: Path, events: list[dict[str, Any]]) -> None:
    """A connection, a datagram or an answer from outside loopback fails the browser test."""
    path = tmp_path / "netlog.json"
    path.write_text(json.dumps(net_log(*events)))
    with pytest.raises(AssertionError, match="beyond loopback"):
        assert_stayed_on_loopback(path)


def test_a_net_log_cut_short_still_reads(tmp_path: Path) -> None:
    """Chromium may exit before closing the JSON; the events written so far are still checked."""
    text = json.dumps(net_log(event("TCP_CONNECT_ATTEMPT", 1, address="198.51.100.7:80")))
    path = tmp_path / "netlog.json"
    path.write_text(text[: text.rindex("]")] + ",\n")
    with pytest.raises(AssertionError, match="beyond loopback"):
        assert_stayed_on_loopback(path)


def test_a_missing_net_log_fails(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="no readable net log"):
        assert_stayed_on_loopback(tmp_path / "absent.json")
