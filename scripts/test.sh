#!/usr/bin/env bash
# Install everything the tests need, start what they talk to, run every quality gate.
# This is the README's test command; .ci/run runs exactly this. It works on a fresh machine
# (it installs what is missing) and when run again (it installs nothing twice).
#
# What it installs, and why:
#   - the locked Python environment (uv sync --frozen; uv itself with pip if missing);
#   - sekmet-fhir (PyPI) in .cache/sekmet-venv: the loopback FHIR server of the end-to-end tests;
#   - Debian's chromium (about 114 packages with its libraries and fonts, ~2 minutes, once): the
#     governance report's browser test and the CDS Hooks Sandbox end-to-end test run in headless
#     Chromium, confined to loopback (tests/browser/confinement.py).
# Arguments are passed to the main pytest run; without any, the clinical, CLI and in-process
# service suites run a second time with the wall clock a year ahead (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

install_chromium() {
  # Debian's chromium with apt-get, showing progress: one line per package set up.
  local log=.cache/apt-chromium.log total set_up=0
  mkdir -p .cache
  echo "apt-get update (the package lists; a fresh machine has none)"
  apt-get update -q 2>&1 | tee "$log" | while IFS= read -r line; do
    case "$line" in Get:* | Hit:* | Err:* | E:* | W:*) printf '  %s\n' "$line" ;; esac
  done
  total=$(apt-get install -s chromium 2>/dev/null | grep -c '^Inst ' || true)
  echo "apt-get install chromium: $total Debian packages (chromium, its libraries and fonts), about 2 minutes"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Use-Pty=0 chromium 2>&1 | tee -a "$log" |
    while IFS= read -r line; do
      case "$line" in
        "Setting up "*) set_up=$((set_up + 1)); printf '  [%s/%s] %s\n' "$set_up" "$total" "${line#Setting up }" ;;
        "Fetched "* | E:* | W:*) printf '  %s\n' "$line" ;;
      esac
    done
}

step "Python environment (uv, locked dependencies)"
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
uv sync --frozen

step "sekmet-fhir, the loopback FHIR R4 server of the e2e tests (own venv: it pins fhir.resources 8)"
SEKMET_VERSION=0.1.1
if ! .cache/sekmet-venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('sekmet-fhir') != '$SEKMET_VERSION')" 2>/dev/null; then
  uv venv --quiet --allow-existing --python 3.11 .cache/sekmet-venv
  uv pip install --python .cache/sekmet-venv/bin/python "sekmet-fhir==$SEKMET_VERSION"
fi
.cache/sekmet-venv/bin/sekmet --version

step "PostgreSQL on 127.0.0.1:5432 (for the Postgres-path tests)"
if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  fi
  pg_isready -h 127.0.0.1 -p 5432 || echo "PostgreSQL is not running: Postgres tests will be skipped"
fi

step "Chromium (browser tests: the governance report, the CDS Hooks Sandbox end to end)"
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  install_chromium
fi
if command -v chromium >/dev/null 2>&1; then
  chromium --version
  export CALF_CDS_TEST_REQUIRE_BROWSER=1
else
  echo "Chromium is missing and cannot be installed here: browser tests will be skipped"
fi

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

if [ "$#" -eq 0 ]; then
  step "pytest --year-ahead: clinical, CLI and in-process service suites, wall clock one year past the fixtures"
  # Same outcomes expected: only the injected clock may decide what is recent (tests/conftest.py).
  uv run --frozen pytest --year-ahead -m "not e2e and not browser" tests/rules tests/fhir_mappings tests/service
fi
