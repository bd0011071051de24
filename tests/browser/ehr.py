"""A small SMART on FHIR authorization server in front of sekmet-fhir, for the EHR-launch test.

It plays the EHR's part of SMART App Launch 2.0 on loopback, with no user interface:

* ``GET {base}/.well-known/smart-configuration`` — discovery (authorize and token endpoints, PKCE S256);
* ``GET /authorize`` — checks the request (response_type, client, redirect URI, ``aud`` = the FHIR
  base, the launch id it issued, PKCE S256) and redirects back with a one-time code;
* ``POST /token`` — checks the code, redirect URI, client and ``code_verifier`` against the
  challenge, and answers the access token (the FHIR server's bearer token), the patient, an
  ``id_token`` naming the user (``fhirUser``) and the CDS card's ``appContext``;
* anything else under ``{base}/`` is passed to sekmet-fhir with the caller's Authorization header.

Every request is recorded (``requests``), so the test can check what reached the EHR.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SmartEhr:
    """The EHR: its FHIR base (``http://127.0.0.1:port/fhir``) and what it was asked."""

    upstream: str
    access_token: str
    patient: str
    user: str
    app_context: str
    client_id: str = "calf-cds-assessment"
    launch: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    requests: list[dict[str, Any]] = field(default_factory=list)
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    granted_scope: str = ""
    server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/fhir"

    def start(self) -> SmartEhr:
        ehr = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_OPTIONS(self) -> None:
                self.answer(204, b"", "text/plain")

            def do_GET(self) -> None:
                ehr.handle(self, "GET")

            def do_POST(self) -> None:
                ehr.handle(self, "POST")

            def answer(
                self, status: int, body: bytes, media: str, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept")
                self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def handle(self, request: Any, method: str) -> None:
        url = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        self.requests.append(
            {"method": method, "path": url.path, "authorization": request.headers.get("Authorization")}
        )
        if url.path == "/fhir/.well-known/smart-configuration":
            root = self.base.removesuffix("/fhir")
            config = {"authorization_endpoint": f"{root}/authorize", "token_endpoint": f"{root}/token",
                      "code_challenge_methods_supported": ["S256"], "capabilities": ["launch-ehr", "client-public",
                      "context-ehr-patient", "permission-v2", "sso-openid-connect"]}  # fmt: skip
            request.answer(200, json.dumps(config).encode(), "application/json")
        elif url.path == "/authorize" and method == "GET":
            self.authorize(request, {k: v[0] for k, v in parse_qs(url.query).items()})
        elif url.path == "/token" and method == "POST":
            self.token(request, {k: v[0] for k, v in parse_qs(body.decode()).items()})
        elif url.path.startswith("/fhir"):
            self.proxy(request, method, url.path.removeprefix("/fhir"), url.query, body)
        else:
            request.answer(404, b"not found", "text/plain")

    def authorize(self, request: Any, query: dict[str, str]) -> None:
        problems = [name for name, ok in (
            ("response_type", query.get("response_type") == "code"),
            ("client_id", query.get("client_id") == self.client_id),
            ("aud", query.get("aud") == self.base),
            ("launch", query.get("launch") == self.launch),
            ("code_challenge_method", query.get("code_challenge_method") == "S256"),
            ("code_challenge", len(query.get("code_challenge", "")) >= 43),
            ("redirect_uri", query.get("redirect_uri", "").startswith("http://127.0.0.1:")),
            ("state", bool(query.get("state"))),
        ) if not ok]  # fmt: skip
        if problems:
            request.answer(
                400, json.dumps({"error": "invalid_request", "fields": problems}).encode(), "application/json"
            )
            return
        code = secrets.token_urlsafe(16)
        self.codes[code] = query
        self.granted_scope = query.get("scope", "")
        target = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
        request.answer(302, b"", "text/plain", {"Location": target})

    def token(self, request: Any, form: dict[str, str]) -> None:
        issued = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        if (
            issued is None
            or form.get("grant_type") != "authorization_code"
            or form.get("redirect_uri") != issued["redirect_uri"]
            or form.get("client_id") != self.client_id
            or _b64url(hashlib.sha256(verifier.encode()).digest()) != issued["code_challenge"]
        ):
            request.answer(400, b'{"error": "invalid_grant"}', "application/json")
            return
        claims = {
            "iss": self.base,
            "sub": "dr-ng",
            "aud": self.client_id,
            "fhirUser": f"{self.base}/{self.user}",
        }
        id_token = ".".join(_b64url(json.dumps(part).encode()) for part in ({"alg": "none"}, claims)) + "."
        token = {"access_token": self.access_token, "token_type": "Bearer", "expires_in": 3600,
                 "scope": issued.get("scope", ""), "patient": self.patient, "id_token": id_token,
                 "appContext": self.app_context}  # fmt: skip
        request.answer(200, json.dumps(token).encode(), "application/json", {"Cache-Control": "no-store"})

    def proxy(self, request: Any, method: str, path: str, query: str, body: bytes) -> None:
        headers = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
        if request.headers.get("Authorization"):
            headers["Authorization"] = request.headers["Authorization"]
        url = self.upstream + path + (f"?{query}" if query else "")
        answer = httpx.request(method, url, content=body or None, headers=headers, timeout=30)
        text = answer.content.replace(self.upstream.encode(), self.base.encode())  # links point here
        request.answer(answer.status_code, text, answer.headers.get("content-type", "application/fhir+json"))
