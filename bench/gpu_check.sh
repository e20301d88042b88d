#!/usr/bin/env bash
# The GPU check for a lent machine: one command, about 2.5 minutes on one H100.
#   (a) ResNet-50, 224 px, AMP: Trainer.fit against a bare loop, images per second
#   (b) OLS on CUDA against the CPU, same inputs
#   (c) a one-process NCCL torchrun demo epoch through `olsdesk train`
#   (d) the data loader with every core against torchvision's pipeline
#   (e) `olsdesk evaluate` of (c)'s checkpoint on CUDA, 1,000 bootstrap resamples
# Run from the repository root after `make test` (or with .venv set up):
#   bash bench/gpu_check.sh            # prints the figures; record them in docs/PERFORMANCE.md
#   PYTHON=python3 bash bench/gpu_check.sh   # any Python with torch and olsdesk importable
# Without a CUDA GPU it says so and exits 2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" - <<'PYEOF'
import sys, torch
if not torch.cuda.is_available():
    print(f"gpu_check: no CUDA GPU is visible to this PyTorch ({torch.__version__}); this "
          "check measures the GPU path, so run it on a machine with one.", file=sys.stderr)
    sys.exit(2)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, "
      f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
PYEOF
echo "== (a) Trainer.fit against a bare loop"
timeout 240 "$PY" bench/gpu_check.py train
echo "== (b) OLS on CUDA against the CPU"
timeout 60 "$PY" bench/gpu_check.py ols
echo "== (c) one-process NCCL torchrun demo epoch"
runs="$(mktemp -d)"
trap 'rm -rf "$runs"' EXIT
start=$(date +%s)
# torchrun's own module, so that any Python with torch will do (no console script needed)
timeout 120 "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m olsdesk train \
    --data demo --device cuda --epochs 1 --runs-dir "$runs" | tail -3
echo "(c) finished in $(( $(date +%s) - start )) s, run.json device: $(grep -o '"device": "[^"]*"' "$runs"/*/run.json)"
echo "== (e) olsdesk evaluate on CUDA"
start=$(date +%s)
timeout 120 "$PY" -m olsdesk evaluate --checkpoint "$(ls "$runs"/*/checkpoints/best.pt)" \
    --out "$runs/evaluation" --device cuda | tail -4
echo "(e) finished in $(( $(date +%s) - start )) s"
echo "== (d) data loader, 1 worker and every core"
timeout 150 "$PY" bench/loader.py --files 2000 --rounds 3
