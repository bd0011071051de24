"""The optional terminology server: $expand at start-up (cached), $validate-code; tested with respx."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import respx

from fhir_mappings.errors import VocabularyError
from fhir_mappings.facts import vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.terminology import bundled_terminology
from service.outbound.terminology_server import TerminologyServer, TerminologyServerError, extend_terminology
from tests.fhir_builders import NOW, SNOMED, condition, patient

BASE = "https://tx.example.org/fhir"
DVT_ISA = "http://snomed.info/sct?fhir_vs=isa/128053003"
# The server's answer: a code the bundled `dvt` set lacks (a real SNOMED CT id, used here only as
# "some code the site's terminology server puts under DVT").
EXTRA = "40283005"
EXPANSION = {
    "resourceType": "ValueSet",
    "expansion": {"contains": [{"system": SNOMED, "code": EXTRA, "display": "from the server"}]},
}


@pytest.fixture
def tx() -> respx.MockRouter:
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def server(router: respx.MockRouter) -> TerminologyServer:
    return TerminologyServer(BASE, transport=httpx.MockTransport(router.async_handler))


async def extended(router: respx.MockRouter, cache: Path, *, now_offset: timedelta = timedelta()) -> Mapper:
    terminology = await extend_terminology(
        bundled_terminology(),
        server=server(router),
        expansions={"dvt": DVT_ISA},
        cache_dir=cache,
        max_age=timedelta(days=7),
        now=NOW + now_offset,
    )
    return Mapper(vocabulary(), terminology)


def dvt_active(mapper: Mapper) -> object:
    resource = condition(SNOMED, EXTRA, days_ago=2)
    return mapper.map(patient_id="p1", patient=patient(), resources=[resource], now=NOW)["dvt_active"].value


@pytest.mark.anyio
async def test_expansion_adds_codes_to_a_value_set(tx: respx.MockRouter, tmp_path: Path) -> None:
    """A code the server's $expand puts in `dvt` is read as a DVT."""
    route = tx.get(f"{BASE}/ValueSet/$expand", params={"url": DVT_ISA}).mock(
        return_value=httpx.Response(200, json=EXPANSION)
    )
    assert dvt_active(Mapper(vocabulary(), bundled_terminology())) is None
    assert dvt_active(await extended(tx, tmp_path)) is True
    assert route.call_count == 1


@pytest.mark.anyio
async def test_expansion_is_cached(tx: respx.MockRouter, tmp_path: Path) -> None:
    """Within the cache age the server is not asked again; a server down later still leaves the codes."""
    route = tx.get(f"{BASE}/ValueSet/$expand").mock(return_value=httpx.Response(200, json=EXPANSION))
    await extended(tx, tmp_path)
    route.mock(return_value=httpx.Response(503))
    assert dvt_active(await extended(tx, tmp_path, now_offset=timedelta(days=1))) is True
    assert dvt_active(await extended(tx, tmp_path, now_offset=timedelta(days=30))) is True
    assert route.call_count == 2  # first fetch, then once more when the cache was stale


@pytest.mark.anyio
async def test_server_down_without_cache_keeps_the_bundled_codes(
    tx: respx.MockRouter, tmp_path: Path
) -> None:
    """No answer and no cache: the bundled lists only, and start-up goes on."""
    tx.get(f"{BASE}/ValueSet/$expand").mock(side_effect=httpx.ConnectError("refused"))
    mapper = await extended(tx, tmp_path)
    assert dvt_active(mapper) is None
    resource = condition(SNOMED, "128053003", days_ago=2)
    assert mapper.map(patient_id="p1", patient=patient(), resources=[resource], now=NOW)["dvt_active"].value


@pytest.mark.anyio
async def test_unknown_value_set_name_is_refused(tx: respx.MockRouter, tmp_path: Path) -> None:
    """A misspelt value-set name in the setting stops start-up instead of expanding into nothing."""
    with pytest.raises(VocabularyError):
        await extend_terminology(
            bundled_terminology(),
            server=server(tx),
            expansions={"dvtt": DVT_ISA},
            cache_dir=tmp_path,
            max_age=timedelta(days=7),
            now=NOW,
        )


@pytest.mark.anyio
@pytest.mark.parametrize("result", [True, False])
async def test_validate_code_reads_the_result(tx: respx.MockRouter, result: bool) -> None:
    """$validate-code's `result` parameter is the answer."""
    tx.get(f"{BASE}/ValueSet/$validate-code").mock(
        return_value=httpx.Response(
            200,
            json={"resourceType": "Parameters", "parameter": [{"name": "result", "valueBoolean": result}]},
        )
    )
    assert await server(tx).validate_code(DVT_ISA, SNOMED, "128053003") is result


@pytest.mark.anyio
async def test_validate_code_without_a_result_is_an_error(tx: respx.MockRouter) -> None:
    """An OperationOutcome instead of Parameters is an error, never a silent 'no'."""
    tx.get(f"{BASE}/ValueSet/$validate-code").mock(
        return_value=httpx.Response(200, json={"resourceType": "OperationOutcome"})
    )
    with pytest.raises(TerminologyServerError):
        await server(tx).validate_code(DVT_ISA, SNOMED, "128053003")


def test_cli_validate_lists_rejected_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """`calf-cds terminology validate` asks about every bundled SNOMED CT code and lists the rejected ones."""
    from service.cli import main

    def answer(request: httpx.Request) -> httpx.Response:
        valid = request.url.params["code"] != "128053003"
        return httpx.Response(
            200, json={"resourceType": "Parameters", "parameter": [{"name": "result", "valueBoolean": valid}]}
        )

    with respx.mock(assert_all_mocked=True) as mock:
        mock.get(f"{BASE}/ValueSet/$validate-code").mock(side_effect=answer)
        status = main(["terminology", "validate", "--server", BASE])
    out = capsys.readouterr().out
    assert status == 1
    assert f"{SNOMED}|128053003" in out
    assert "SNOMED CT codes valid" in out
