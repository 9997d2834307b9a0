#!/usr/bin/env bash
# Set up .venv with the test extras, start the services the tests use, run the whole suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh test
# shellcheck source=scripts/services.sh
. scripts/services.sh
.venv/bin/lint-imports  # reads the contract in setup.cfg
.venv/bin/ruff check --quiet ccctl tests benchmarks
.venv/bin/mypy --no-error-summary
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
