"""Log lines carry no patient id and no token."""

from __future__ import annotations

import io
import logging
import logging.config

import pytest

from service.ops.telemetry import PrivacyFilter, log_config, patient_hash, scrub

KEY = b"k" * 32
JWT = (
    "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0"
    ".eyJpc3MiOiJodHRwczovL2VociIsImF1ZCI6Imh0dHBzOi8vY2RzIn0"
    ".MGUCMQDx1y2z3"
)


def test_patient_hash_is_stable_keyed_and_short() -> None:
    assert patient_hash("123", KEY) == patient_hash("123", KEY)
    assert patient_hash("123", KEY) != patient_hash("124", KEY)
    assert patient_hash("123", KEY) != patient_hash("123", b"x" * 32)
    assert patient_hash("123", KEY).startswith("pt-")
    assert len(patient_hash("123", KEY)) == 15


@pytest.mark.parametrize(
    "message",
    [
        "FHIR GET https://ehr.example.org/fhir/Patient/smart-1288992 failed",
        "FHIR GET Patient/smart-1288992 timed out",
        "search Observation?patient=smart-1288992&_count=100",
        'context {"patientId": "smart-1288992"}',
        "patient_id=smart-1288992",
    ],
)
def test_patient_ids_are_hashed(message: str) -> None:
    cleaned = scrub(message, KEY)
    assert "smart-1288992" not in cleaned
    assert patient_hash("smart-1288992", KEY) in cleaned


@pytest.mark.parametrize(
    "message",
    [
        f"token {JWT}",
        f"Authorization: Bearer {JWT}",
        "Authorization: Bearer opaque-token-value.123",
        '{"access_token": "secret-token-123", "token_type": "Bearer"}',
        "access_token=secret-token-123&scope=x",
    ],
)
def test_tokens_are_removed(message: str) -> None:
    cleaned = scrub(message, KEY)
    for secret in (JWT, "opaque-token-value.123", "secret-token-123", "MGUCMQDx1y2z3"):
        assert secret not in cleaned
    assert "[redacted]" in cleaned


def test_ordinary_text_is_kept() -> None:
    message = "calf-cds ready: active pack calf-pain@0.1.0; 3 cards; Patient resource read"
    assert scrub(message, KEY) == message


def test_filter_rewrites_message_args_extra_and_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PrivacyFilter("key"))
    handler.setFormatter(logging.Formatter("%(message)s %(patient_id)s"))
    logger = logging.getLogger("calf_cds.test_privacy")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("no such Patient/p-42 with Bearer abc.def")
        except ValueError:
            logger.exception("lookup of %s failed", "Patient/p-42", extra={"patient_id": "p-42"})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = stream.getvalue()
    assert "p-42" not in text
    assert "abc.def" not in text
    assert "ValueError" in text
    assert text.count(patient_hash("p-42", b"key")) >= 3  # message, extra, exception


def test_logging_config_installs_the_filter_for_uvicorn_too(capsys: pytest.CaptureFixture[str]) -> None:
    """The service's dictConfig document (``service.ops.telemetry.log_config``) puts the filter on the one
    handler that its own and uvicorn's loggers reach."""
    names = ("", "calf_cds", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx")
    saved = {
        name: (logger.handlers[:], logger.level, logger.propagate)
        for name in names
        for logger in [logging.getLogger(name)]
    }
    try:
        logging.config.dictConfig(log_config("INFO"))
        logging.getLogger("uvicorn.error").warning("client sent Bearer %s", JWT)
        logging.getLogger("calf_cds.service").info("read Patient/%s", "p-77")
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
    err = capsys.readouterr().err
    assert JWT not in err
    assert "p-77" not in err
    assert "Bearer [redacted]" in err
