"""``calf-cds try``: one patient-view call for a patient on any FHIR server, cards in the terminal.

::

    calf-cds try --fhir-server URL --patient ID [--bearer TOKEN] [--user REF]
                 [--service URL [--jwt TOKEN]] [--dev] [--json]

The call carries no prefetch, so the service reads the patient from ``--fhir-server`` itself (with
``--bearer`` as ``fhirAuthorization``). Without ``--service`` it runs in this process, through the
web service's own front door (:class:`~service.hooks.pipeline.FrontDoor`: the same request guards,
pipeline and response check, and an audit record, kept nowhere) and
:class:`~service.hooks.fhir_fetcher.FhirFetcher`, on the same ``CALF_CDS_*`` settings, reading only
a FHIR server the :class:`~service.hooks.fhir_server_guard.FhirServerGuard` approves (``--dev``: as
``calf-cds serve --dev`` does, plain http and loopback servers too). With ``--service`` it is POSTed to a running
service (``--jwt`` is sent as its client token). Exit codes: 0 cards shown (possibly none),
1 the call failed (the OperationOutcome's diagnostics are printed), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from rich.console import Console, Group, RenderableType
from rich.markdown import Markdown
from rich.panel import Panel
from rich.text import Text

from cds_hooks.outcome import operation_outcome
from rules.codes import Indicator
from rules.errors import RuleError
from service.config import Settings
from service.hooks.discovery import SERVICE_ID, standard_hooks
from service.outbound.pinned_transport import Resolver, system_resolver

if TYPE_CHECKING:
    from cds_hooks.prefetch_plan import Fetcher
    from service.hooks.pipeline import Answer

__all__ = ["answer_in_process", "build_request", "handle", "render_cards", "run_try"]

INDICATOR_STYLES: Mapping[str, str] = {
    Indicator.CRITICAL: "bold red",
    Indicator.WARNING: "yellow",
    Indicator.INFO: "blue",
}
SCOPE = "patient/Patient.read patient/Observation.read patient/Condition.read"
Reply = tuple[int, dict[str, Any], list[str]]  # status, response or OperationOutcome, audit notes


def handle(args: argparse.Namespace) -> int:
    """``calf-cds try`` as ``service.cli`` parsed it, at ``args.clock()``."""
    parser: argparse.ArgumentParser = args.parser
    for option, value in (("--fhir-server", args.fhir_server), ("--service", args.service)):
        if value is not None and not value.startswith(("http://", "https://")):
            parser.error(f"{option} must be an http(s) URL")
    if not args.patient.strip():
        parser.error("--patient must not be empty")
    if args.jwt and not args.service:
        parser.error("--jwt is for --service; the in-process call needs no client token")
    if args.dev and args.service:
        parser.error("--dev is for the in-process call; a running service has its own settings")
    return run_try(args, clock=args.clock)


def build_request(fhir_server: str, patient_id: str, *, bearer: str | None, user_id: str) -> dict[str, Any]:
    """A patient-view call with no prefetch, so that the service reads ``fhir_server``."""
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir_server.rstrip("/"),
        "context": {"userId": user_id, "patientId": patient_id},
    }
    if bearer:
        body["fhirAuthorization"] = {
            "access_token": bearer,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": SCOPE,
            "subject": "calf-cds-try",
            "patient": patient_id,
        }
    return body


def run_try(
    args: argparse.Namespace,
    *,
    settings: Settings | None = None,
    fetcher: Fetcher | None = None,
    transport: httpx.BaseTransport | None = None,
    resolver: Resolver = system_resolver,
    console: Console | None = None,
    progress: Console | None = None,
    clock: Callable[[], datetime],
) -> int:
    """Run ``calf-cds try`` at ``clock()``; the keywords replace the environment, the network (and
    DNS) and the terminal."""
    settings = settings or Settings()
    if getattr(args, "dev", False):
        settings = settings.model_copy(update={"dev": True})
    out = console or Console()
    err = progress or Console(stderr=True)
    body = build_request(args.fhir_server, args.patient, bearer=args.bearer, user_id=args.user)
    where = f"{args.service} (service)" if args.service else "this process"
    started = time.monotonic()
    with err.status(f"Patient/{args.patient}: reading {body['fhirServer']} in {where}…"):
        if args.service:
            jwt = args.jwt or _dev_token(args.service, settings, now=clock().timestamp())
            if jwt is None:
                err.print(
                    "note: no --jwt, and no development issuer in the data folder (CALF_CDS_DATA_DIR) "
                    "to sign with: the call goes without a client JWT"
                )
            status, answer, notes = _call_service(args.service, body, jwt=jwt, transport=transport)
        else:
            status, answer, notes = _call_in_process(body, settings, fetcher, resolver, clock)
    elapsed = time.monotonic() - started
    if status != 200:
        render_outcome(err, status, answer)
        return 1
    if args.json:
        out.print_json(json.dumps(answer))
        return 0
    err.print(f"[dim]calf-pain answered in {elapsed:.2f} s[/]")
    render_cards(out, answer, patient_id=args.patient, fhir_server=body["fhirServer"])
    for note in notes:
        err.print(Text(f"note: {note}", style="dim"))
    return 0


def answer_in_process(
    body: dict[str, Any],
    settings: Settings,
    *,
    fetcher: Fetcher | None = None,
    resolver: Resolver = system_resolver,
    clock: Callable[[], datetime],
) -> Answer:
    """The answer to ``body`` from the web service's own front door, built here on ``settings``: the
    same guards, pipeline, response check and audit record (kept nowhere: there is no audit store
    here). The call has no client, so no issuer's ``fhir_servers`` apply.

    :raises RuleError, OSError, ValueError: when the rule packs cannot be loaded.
    """
    # Imported here: loading rule packs and FHIR models is for this command only, not for `--help`.
    from service.hooks.fhir_fetcher import FhirFetcher
    from service.hooks.fhir_server_guard import FhirServerGuard
    from service.hooks.guards import RequestLimits, body_reader
    from service.hooks.packs import PackRegistry
    from service.hooks.pipeline import FrontDoor, HookCall

    door = FrontDoor(
        standard_hooks(),
        PackRegistry.load(settings).service(clock=clock),
        RequestLimits.from_settings(settings),
        fetcher=fetcher or FhirFetcher.from_settings(settings),
        guard=FhirServerGuard.from_settings(settings, resolver=resolver),
    )
    call = HookCall(SERVICE_ID, "application/json", body_reader(orjson.dumps(body)))
    return asyncio.run(door.answer(call))


def _call_in_process(
    body: dict[str, Any],
    settings: Settings,
    fetcher: Fetcher | None,
    resolver: Resolver,
    clock: Callable[[], datetime],
) -> Reply:
    try:
        answer = answer_in_process(body, settings, fetcher=fetcher, resolver=resolver, clock=clock)
    except (RuleError, OSError, ValueError) as error:
        return 500, operation_outcome(f"cannot load the rule packs: {error}", code="exception"), []
    if answer.error is not None:
        raise answer.error
    return answer.status, answer.body, list(answer.record.notes)


def _dev_token(service: str, settings: Settings, *, now: float) -> str | None:
    """Without ``--jwt``: a token from the local development issuer (what `calf-cds serve --dev`
    trusts), if the data folder has one; never a new key, which no running service would trust."""
    from service.auth.dev_issuer import DevIssuer, DevIssuerMissingError

    audience = service.rstrip("/") + f"/cds-services/{SERVICE_ID}"
    try:
        return DevIssuer.load(settings.data_dir).token(audience, now=now)
    except DevIssuerMissingError:
        return None


def _call_service(
    service: str, body: dict[str, Any], *, jwt: str | None, transport: httpx.BaseTransport | None
) -> Reply:
    url = service.rstrip("/") + f"/cds-services/{SERVICE_ID}"
    headers = {"Accept": "application/json"}
    if jwt:
        headers["Authorization"] = f"Bearer {jwt}"
    try:
        with httpx.Client(timeout=60, transport=transport, trust_env=False) as client:
            response = client.post(url, json=body, headers=headers)
    except httpx.HTTPError as error:
        return 503, operation_outcome(f"could not reach {url}: {type(error).__name__}", code="exception"), []
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        diagnostics = f"{url} answered HTTP {response.status_code} without a JSON object"
        return response.status_code or 502, operation_outcome(diagnostics, code="exception"), []
    return response.status_code, answer, []


# --------------------------------------------------------------------------------------------
# Rendering


def render_outcome(console: Console, status: int, outcome: Mapping[str, Any]) -> None:
    """Print an error answer: the status and every issue's diagnostics."""
    console.print(Text(f"calf-pain failed (HTTP {status})", style="bold red"))
    issues = outcome.get("issue") if outcome.get("resourceType") == "OperationOutcome" else None
    if not isinstance(issues, list) or not issues:
        console.print(Text(json.dumps(outcome)[:2000]))
        return
    for issue in issues:
        if isinstance(issue, Mapping):
            where = ", ".join(issue.get("expression", []))
            line = Text.assemble(
                (f"{issue.get('severity', 'error')} ", "red"),
                (f"[{issue.get('code', '?')}] ", "dim"),
                str(issue.get("diagnostics", "")),
                (f"  at {where}" if where else "", "dim"),
            )
            console.print(line)


def render_cards(
    console: Console, response: Mapping[str, Any], *, patient_id: str = "", fhir_server: str = ""
) -> None:
    """Print each card as a panel coloured by its indicator, with its detail as Markdown."""
    cards = response.get("cards") or []
    source = f" (data from {fhir_server})" if fhir_server else ""
    count = f"{len(cards)} card" + ("" if len(cards) == 1 else "s")
    console.print(Text.assemble(("calf-pain", "bold"), f": {count} for Patient/{patient_id}{source}"))
    if not cards:
        console.print("No cards: nothing to recommend for this patient's documented findings.")
        return
    for card in cards:
        console.print(_card_panel(card))


def _card_panel(card: Mapping[str, Any]) -> Panel:
    indicator = str(card.get("indicator", "info"))
    style = INDICATOR_STYLES.get(indicator, "white")
    source = card.get("source") or {}
    topic = source.get("topic") or {}
    parts: list[RenderableType] = [
        Text(str(card.get("summary", "")), style="bold"),
        Text.assemble(
            ("topic: ", "dim"),
            (str(topic.get("code", "?")), "bold"),
            f" — {topic['display']}" if topic.get("display") else "",
        ),
        Text.assemble(("source: ", "dim"), str(source.get("label", ""))),
    ]
    if card.get("detail"):
        parts += [Text(), Markdown(str(card["detail"]))]
    suggestions = card.get("suggestions") or []
    if suggestions:
        parts += [Text(), Text("Suggestions", style="bold")]
        for suggestion in suggestions:
            mark = "★ " if suggestion.get("isRecommended") else "• "
            parts.append(Text.assemble(mark, str(suggestion.get("label", ""))))
            for action in suggestion.get("actions") or []:
                kind = (action.get("resource") or {}).get("resourceType") or action.get("resourceId") or ""
                parts.append(Text(f"    {action.get('type', '?')} {kind}".rstrip(), style="dim"))
    links = card.get("links") or []
    if links:
        parts += [Text(), Text("Links", style="bold")]
        parts += [
            Text.assemble("• ", str(link.get("label", "")), (f"  {link.get('url', '')}", "dim"))
            for link in links
        ]
    title = Text.assemble((f" {indicator.upper()} ", f"reverse {style}"), f" {topic.get('code', '?')} ")
    return Panel(Group(*parts), title=title, title_align="left", border_style=style, padding=(0, 1))
