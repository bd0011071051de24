#!/usr/bin/env bash
# Install everything the tests need, start what they talk to, run every quality gate.
# This is the README's test command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "Python environment (uv, locked dependencies)"
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
uv sync --frozen --quiet

step "sekmet-fhir, the loopback FHIR R4 server of the e2e tests (own venv: it pins fhir.resources 8)"
SEKMET_VERSION=0.1.1
if ! .cache/sekmet-venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('sekmet-fhir') != '$SEKMET_VERSION')" 2>/dev/null; then
  uv venv --quiet --allow-existing --python 3.11 .cache/sekmet-venv
  uv pip install --quiet --python .cache/sekmet-venv/bin/python "sekmet-fhir==$SEKMET_VERSION"
fi
.cache/sekmet-venv/bin/sekmet --version

step "PostgreSQL on 127.0.0.1:5432 (for the Postgres-path tests)"
if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  fi
  pg_isready -h 127.0.0.1 -p 5432 || echo "PostgreSQL is not running: Postgres tests will be skipped"
fi

step "Chromium (the governance report's browser test)"
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
[ -x /usr/bin/chromium ] && export CALF_CDS_TEST_REQUIRE_BROWSER=1 || echo "Chromium is missing: browser tests will be skipped"

# --- JavaScript: the assessment app (webapp/package-lock.json) -------------------------------
# npm ci installs lforms (vendored into service/assessment/static/vendor, committed) and
# playwright-core (drives Chromium in tests/service/test_assessment_browser.py); --check fails
# when the committed copy of lforms is not byte for byte what the lockfile installs.
step "JavaScript for the assessment app (npm ci; vendored LHC-Forms matches the lockfile)"
if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if command -v npm >/dev/null 2>&1; then
  bash scripts/vendor-app.sh --check
else
  echo "npm is missing: the app's browser tests will be skipped (or fail under CALF_CDS_TEST_REQUIRE_BROWSER)"
fi

step "ruff (lint and format)"
uv run --frozen ruff check .
uv run --frozen ruff format --check .

step "mypy (strict)"
uv run --frozen mypy

step "import-linter (package boundaries)"
uv run --frozen lint-imports

step "pytest"
uv run --frozen pytest "$@"
