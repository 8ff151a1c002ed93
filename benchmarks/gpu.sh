#!/usr/bin/env bash
# NTK-engine throughput on a lent GPU (roberta-large-sized random-init encoder; < 5 minutes).
# Usage (repository root, package importable):  bash benchmarks/gpu.sh
# Needs torch with CUDA, transformers; no network, no data files. Writes $OUT/gpu_ntk.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-}:$(pwd)/src"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
export LORANK_GPU_BUDGET_S="${LORANK_GPU_BUDGET_S:-240}"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
timeout 290 python benchmarks/gpu_ntk.py
