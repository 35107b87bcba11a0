#!/usr/bin/env bash
# The whole test suite (the README's test command calls this through `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
