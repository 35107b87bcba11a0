#!/usr/bin/env bash
# End-to-end demo: write the random-weight MODEL1 checkpoint, then generate from it.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${STRATA_DEMO_MODEL:-demo-model}
[ -f "$MODEL/config.json" ] || .venv/bin/strata demo-model "$MODEL"
.venv/bin/strata generate --model "$MODEL" --prompt "What does the cache module do?" --max-new-tokens 24 --json
