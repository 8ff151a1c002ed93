#!/usr/bin/env bash
# Set up (idempotent) and run the default test suite (slow tests excluded: `pytest -m slow`).
# Uses ../shared/data as the data directory when it is there (tests needing it skip otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${LORANK_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export LORANK_DATA_DIR="$(cd ../shared/data && pwd)"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check src tests benchmarks
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "error: no tests collected" >&2; exit 1; fi
exit "$rc"
