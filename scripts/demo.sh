#!/usr/bin/env bash
# End-to-end demo: write the random-weight MODEL1 checkpoint, generate from it, then ask a
# question about the sample repository, PDF, images and video -- twice, to show the second
# question reusing the cached prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${STRATA_DEMO_MODEL:-demo-model}
export STRATA_HOME=${STRATA_HOME:-$PWD/.strata}
[ -f "$MODEL/config.json" ] || .venv/bin/strata demo-model "$MODEL"
.venv/bin/strata generate --model "$MODEL" --prompt "What does the cache module do?" --max-new-tokens 16
.venv/bin/strata ask --model "$MODEL" samples -q "What does this project do?" --max-new-tokens 16
.venv/bin/strata ask --model "$MODEL" samples -q "Where is the worker configured?" --max-new-tokens 16
