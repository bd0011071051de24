"""Service settings, from ``CALF_CDS_*`` environment variables or given directly by tests.

No module-level instance: :func:`get_settings` is injected, and ``create_app(settings)`` takes one.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATA_DIR = Path(".calf-cds")


class Settings(BaseSettings):
    """Everything an operator can configure. Defaults run the service on one machine."""

    model_config = SettingsConfigDict(env_prefix="CALF_CDS_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        description="Writable folder for the SQLite audit file, the audit spool and dev keys.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the audit store; default: SQLite file in data_dir.",
    )
    public_base_url: str | None = Field(
        default=None,
        description="The URL clients call us at (behind a proxy); JWT audiences are built on it.",
    )
    active_pack: str = Field(default="calf-pain@1.0.0", description="id@version of the live pack.")
    shadow_packs: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="id@version of packs that run beside the active one, never shown."
    )
    rules_dir: Path | None = Field(default=None, description="Extra folder of rule packs.")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("*",), description="Origins allowed to call from a browser (CDS Hooks Sandbox)."
    )
    max_body_bytes: int = Field(default=5_000_000, ge=1024, description="Largest request body.")
    fhir_fetch: bool = Field(
        default=True, description="Fetch prefetch that is missing or failed from the request's fhirServer."
    )
    fhir_request_timeout: float = Field(default=2.0, gt=0, le=60, description="Seconds per FHIR request.")
    fhir_total_budget: float = Field(
        default=4.0, gt=0, le=120, description="Seconds for all FHIR fetching of one call (pages, retries)."
    )
    fhir_max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries of a FHIR GET on 5xx or no answer."
    )
    log_level: str = Field(default="INFO")
    workers: int = Field(
        default=1, ge=1, le=64, description="Worker processes for `calf-cds serve` (its --workers default)."
    )
    db_migrate: Literal["auto", "upgrade", "verify", "off"] = Field(
        default="auto",
        description="Schema at start-up: auto = upgrade on SQLite, verify elsewhere (see README).",
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        description="Delete audit calls, cards and feedback older than this many days; None keeps all.",
    )
    retention_interval_hours: float = Field(
        default=24.0, gt=0, description="How often a running service applies retention_days."
    )

    @field_validator("shadow_packs", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def resolved_database_url(self) -> str:
        """The audit store URL; the SQLite default lives in the data folder."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'audit.sqlite3').resolve()}"


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()
