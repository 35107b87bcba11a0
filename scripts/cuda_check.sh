#!/usr/bin/env bash
# Issue 8's GPU check in two halves (bench/cuda_check.py says what it measures).
#   bash scripts/cuda_check.sh fetch   # where PyPI is reachable: the wheels the GPU image lacks -> .whl/
#   bash scripts/cuda_check.sh run     # on the GPU machine (Python 3.12, CUDA torch): install .whl/, run the check
# With the device tool: run `fetch` here, then run(command="bash scripts/cuda_check.sh run", carry=[".whl"]);
# results land in $OUT/cuda_check.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(pydantic==2.14.4 pydantic-core pydantic-settings==2.16.3 python-dotenv==1.2.4 typing-inspection==0.4.5
        annotated-types==0.8.0 lmdb==3.0.0 redis==8.1.0)
case "${1:-}" in
  fetch)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    # pydantic-core must be the version pydantic pins.
    core=$(.venv/bin/python -c "import pydantic_core; print(pydantic_core.__version__)")
    WHEELS[1]="pydantic-core==$core"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "${WHEELS[@]}"
    ls .whl ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    timeout 540 python3 bench/cuda_check.py "${@:2}" ;;
  *) echo "usage: $0 fetch|run [--skip-engine]" >&2; exit 2 ;;
esac
