"""Service settings, from ``CALF_CDS_*`` environment variables or given directly by tests.

No module-level instance: each entry point builds one (``service.app.app_from_env``, the CLI) and
hands it down; ``create_app(settings)`` takes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["DEFAULT_DATA_DIR", "SUPPORTED_ALGORITHMS", "Settings"]

DEFAULT_DATA_DIR = Path(".calf-cds")


# Client JWT algorithms the verifier accepts (asymmetric only: CDS Hooks forbids none and HMAC).
SUPPORTED_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)


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
    # -- client authentication (README "Security") ----------------------------------------------
    trusted_issuers_file: Path | None = Field(
        default=None,
        description="JSON file naming the CDS Clients (JWT issuers) we accept, and their keys.",
    )
    dev: bool = Field(
        default=False,
        description="Development mode: also trust the local development issuer in data_dir.",
    )
    jwt_algorithms: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("ES384", "RS384"), description="JWS algorithms accepted (never none or HMAC)."
    )
    jwt_leeway_seconds: float = Field(default=5.0, ge=0, le=300, description="Clock skew allowed.")
    jwt_max_lifetime_seconds: float = Field(default=3600.0, gt=0, description="Longest exp - iat.")
    jwks_cache_seconds: float = Field(
        default=300.0, ge=30, le=3600, description="How long a fetched JWK Set is used before reloading."
    )
    # -- card explanation pages (README "Cards") ---------------------------------------------------
    explanation_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key of the cards' explanation links (>= 32 characters; the same on every "
        "replica); default: a random key kept in data_dir/explanation.key.",
    )
    explanation_link_seconds: int = Field(
        default=900, ge=60, le=86_400, description="How long a card's explanation link stays valid."
    )
    explanation_cache_size: int = Field(
        default=2000, ge=10, description="Explanations each worker keeps in memory (the database keeps all)."
    )
    # -- hostile input ---------------------------------------------------------------------------
    max_json_depth: int = Field(default=64, ge=8, le=512, description="Deepest JSON nesting accepted.")
    max_array_length: int = Field(
        default=10_000, ge=100, description="Most items in one JSON array (or members in one object)."
    )
    max_string_length: int = Field(default=100_000, ge=1024, description="Longest JSON string.")
    log_hash_key: SecretStr | None = Field(
        default=None,
        description="Key for the patient-id hashes in log lines; default: a new random key per process.",
    )
    active_pack: str = Field(default="calf-pain@1.2.0", description="id@version of the live pack.")
    shadow_packs: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="id@version of packs that run beside the active one, never shown."
    )
    rules_dir: Path | None = Field(default=None, description="Extra folder of rule packs.")
    site_orderables: Path | None = Field(
        default=None,
        description="A site order catalogue (JSON) added to the bundled one for the order hooks.",
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("*",), description="Origins allowed to call from a browser (CDS Hooks Sandbox)."
    )
    max_body_bytes: int = Field(default=5_000_000, ge=1024, description="Largest request body.")
    terminology_server: str | None = Field(
        default=None,
        description="FHIR terminology server base URL for value-set expansions (off by default).",
    )
    terminology_expansions: dict[str, str] = Field(
        default_factory=dict,
        description="JSON: value-set name -> ValueSet canonical URL to $expand at start-up and add to it.",
    )
    terminology_cache_days: float = Field(
        default=7.0,
        gt=0,
        description="Days a cached terminology expansion is used before it is fetched again.",
    )
    max_oversized_body_bytes: int = Field(
        default=32_000_000,
        ge=0,
        description=(
            "Largest body read when it is over max_body_bytes: its prefetch is discarded and fetched "
            "narrowly from the request's fhirServer (0: refuse every body over max_body_bytes with 413)."
        ),
    )
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
    # -- which FHIR servers may be read (README "Security"; service/hooks/fhir_server_guard.py) ---------
    fhir_allow_private: bool = Field(
        default=False,
        description="Read a fhirServer in a private range (10/8, 172.16/12, 192.168/16, 100.64/10, "
        "fc00::/7) for clients without a fhir_servers list.",
    )
    fhir_allow_loopback: bool = Field(
        default=False,
        description="Read a loopback fhirServer (127/8, ::1) for clients without a fhir_servers list.",
    )
    fhir_allow_http_loopback: bool = Field(
        default=False,
        description="Outside development mode, accept plain http for a fhirServer on loopback (only).",
    )
    log_level: str = Field(default="INFO")
    workers: int = Field(
        default=1, ge=1, le=64, description="Worker processes for `calf-cds serve` (its --workers default)."
    )
    db_pool_size: int = Field(
        default=10,
        ge=2,
        le=200,
        description="Database connections per worker process (PostgreSQL); callers beyond it wait.",
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

    @field_validator("shadow_packs", "cors_origins", "jwt_algorithms", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        refused = sorted(set(value) - SUPPORTED_ALGORITHMS)
        if refused or not value:
            raise ValueError(
                f"{refused or 'an empty list'} refused: choose from {sorted(SUPPORTED_ALGORITHMS)} "
                "(CDS Hooks forbids 'none' and HMAC)"
            )
        return value

    @field_validator("explanation_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("explanation_secret must be at least 32 characters")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("public_base_url must be an absolute http(s) URL without query or fragment")
        return value.rstrip("/")

    def resolved_database_url(self) -> str:
        """The audit store URL; the SQLite default lives in the data folder."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'audit.sqlite3').resolve()}"
