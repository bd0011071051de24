"""`calf-cds rules test`: a pack's clinical cases run through mapper, engine and card builder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from tests.fhir_builders import NOW, calf_pain, finding, patient, quantity
from tests.service.governance.conftest import RULE_PACKS


def case(case_id: str, resources: list[dict[str, Any]], expect: dict[str, Any]) -> dict[str, Any]:
    return {"id": case_id, "now": NOW.isoformat().replace("+00:00", "Z"), "patient": patient(),
            "resources": resources, "expect": expect}  # fmt: skip


@pytest.fixture
def cases(tmp_path: Path) -> Path:
    swelling = [calf_pain(), finding("calf-circumference-difference", quantity(0.5, "cm"))]
    claudication = [calf_pain(), finding("exertional-leg-pain"), finding("relief-standing-still")]
    (tmp_path / "venous.json").write_text(json.dumps([
        case("slight-swelling-needs-dvt-work-up", swelling,
             {"topics": ["duplex-dvt"], "forbidden": ["conservative"], "mentions": {"duplex-dvt": ["not recorded"]}}),
    ]))  # fmt: skip
    (tmp_path / "arterial.json").write_text(json.dumps([
        case("claudication-gets-resting-abi", claudication,
             {"topics": ["abi"], "indicators": {"abi": "info"}, "mentions": {"abi": ["resting"]}, "pattern": "arterial"}),
    ]))  # fmt: skip
    return tmp_path


def test_released_pack_passes_its_cases(cases: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "test", "0.1.0", "--cases", str(cases)]) == 0
    assert "calf-pain@0.1.0: 2 of 2 cases pass" in capsys.readouterr().out


def test_candidate_failures_are_named(
    cases: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The candidate drops the 0.5 cm trigger and raises ABI to warning: both cases fail, saying why."""
    monkeypatch.setenv("CALF_CDS_RULES_DIR", str(RULE_PACKS))
    assert main(["rules", "test", "0.1.1", "--cases", str(cases)]) == 1
    out = capsys.readouterr().out
    assert "FAIL venous.json slight-swelling-needs-dvt-work-up" in out
    assert "expected a duplex-dvt card" in out
    assert "abi card should be info, is warning" in out
    assert "calf-pain@0.1.1: 0 of 2 cases pass" in out


def test_default_pack_is_the_active_one(cases: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "test", "--cases", str(cases)]) == 0
    assert "calf-pain@0.1.0" in capsys.readouterr().out


def test_malformed_case_file_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.json").write_text('{"id": "not a list"}')
    assert main(["rules", "test", "--cases", str(tmp_path)]) == 2
    assert "a case file is a JSON array of cases" in capsys.readouterr().err


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0", "1.2.0"])
def test_the_active_pack_passes_every_clinical_case(version: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`calf-cds rules test` agrees with tests/rules/test_cases.py: each pack passes the cases that
    apply to it (its own recorded answer where it differs), the overall pattern included (a pack that
    shows no card still names its pattern)."""
    folder = Path(__file__).resolve().parents[2] / "rules" / "cases"
    assert main(["rules", "test", version, "--cases", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out


def test_a_case_for_a_later_pack_is_skipped_and_a_versioned_answer_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`since` keeps a case away from older packs; `expect_by_version` is that version's answer."""
    swelling = [calf_pain(), finding("calf-circumference-difference", quantity(0.5, "cm"))]
    later = case("later", swelling, {"topics": ["abi"], "forbidden": []}) | {"since": "9.0.0"}
    versioned = case("versioned", swelling, {"topics": ["abi"], "forbidden": []}) | {
        "expect_by_version": {"0.1.0": {"topics": ["duplex-dvt"], "forbidden": ["conservative"]}}
    }
    (tmp_path / "cases.json").write_text(json.dumps([later, versioned]))
    assert main(["rules", "test", "0.1.0", "--cases", str(tmp_path)]) == 0
    assert "calf-pain@0.1.0: 1 of 1 cases pass" in capsys.readouterr().out


ORDER_CASES = Path(__file__).resolve().parents[2] / "rules" / "order-cases"


def test_rules_test_runs_the_order_cases_for_their_hooks(capsys: pytest.CaptureFixture[str]) -> None:
    """`calf-cds rules test` runs an order case as its hook's call: every one of the 58 passes on
    1.2.0 (rules, deletes and created codes included); 1.1.0 answers no order hook and runs none."""
    assert main(["rules", "test", "1.2.0", "--cases", str(ORDER_CASES)]) == 0
    out = capsys.readouterr().out
    assert "58 of 58 cases pass" in out
    main(["rules", "test", "1.1.0", "--cases", str(ORDER_CASES)])  # no case to pass: not a pass
    assert "0 of 0 cases pass" in capsys.readouterr().out


def test_a_wrong_order_expectation_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A case whose recommended suggestion deletes another draft than expected fails with the reason."""
    (case,) = [
        c
        for c in json.loads((ORDER_CASES / "orders.json").read_text("utf-8"))
        if c["id"] == "ord-duplex-decided-unlikely-no-d-dimer-d-dimer-first"
    ]
    case["expect"]["recommended"]["duplex-dvt"]["delete"] = ["ServiceRequest/elsewhere"]
    case["expect"]["rules"] = ["order-lumbar-mri-intervention"]
    (tmp_path / "wrong.json").write_text(json.dumps([case]))
    assert main(["rules", "test", "1.2.0", "--cases", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "ServiceRequest/elsewhere" in out
    assert "rule order-lumbar-mri-intervention should fire" in out
