#!/usr/bin/env bash
# The GPU check for a lent machine: one command, about 8-9 minutes on one H100 (run it
# alone in a call of up to 600 s, or (a)-(i) and (c)-(l) in two).
#   (a) ResNet-50, 224 px, AMP: Trainer.fit against a bare loop, images per second, with
#       the preprocessing on the CPU and on the GPU (device_preprocessing), as (f) and (k)
#   (b) OLS on CUDA against the CPU, same inputs
#   (c) a one-process NCCL torchrun demo epoch through `olsdesk train`
#   (d) the data loader with every core against torchvision's pipeline
#   (e) `olsdesk evaluate` of (c)'s checkpoint on CUDA, 1,000 bootstrap resamples
#   (f) a folder of 4,096 224-px PNGs: Trainer.fit against a bare loop fed by the same files,
#       and (m) the confidences its runs stored against the predictor's on the GPU
#   (g) Trainer.fit with --compile against without, recompilations over 3 epochs and a resume
#   (h) with two or more GPUs: `olsdesk train --gpus N` against N x one GPU, and the
#       per-step all-reduce of the stop flags
#   (i) 20 training steps under torch.profiler ($OUT/olsdesk-gpu-check/profile.txt), and
#   (k) the host-device synchronisations over 30 steps
#   (l) the epoch end at 135,000 x 165 on this machine's cores (the CPU only: its fits
#       run side by side, so the cores decide whether it stays under 2 s)
# Run from the repository root after `make test` (or with .venv set up):
#   bash bench/gpu_check.sh            # prints the figures; record them in docs/PERFORMANCE.md
#   bash bench/gpu_check.sh --allow-cpu   # a dry run of (a), (b), (f)-(i) on the CPU, tiny
#   PYTHON=python3 bash bench/gpu_check.sh   # any Python with torch and olsdesk importable
# Without a CUDA GPU (and without --allow-cpu) it says so and exits 2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
ALLOW=()
[[ "${1:-}" == "--allow-cpu" ]] && ALLOW=(--allow-cpu)
"$PY" - "${ALLOW[@]}" <<'PYEOF'
import sys, torch
if not torch.cuda.is_available():
    if "--allow-cpu" in sys.argv:
        print(f"torch {torch.__version__}, no CUDA: a dry run on the CPU, tiny sizes")
        sys.exit(0)
    print(f"gpu_check: no CUDA GPU is visible to this PyTorch ({torch.__version__}); this "
          "check measures the GPU path, so run it on a machine with one.", file=sys.stderr)
    sys.exit(2)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, "
      f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
PYEOF
echo "== (a) Trainer.fit against a bare loop"
timeout 330 "$PY" bench/gpu_check.py train "${ALLOW[@]}"
echo "== (b) OLS on CUDA against the CPU"
timeout 60 "$PY" bench/gpu_check.py ols "${ALLOW[@]}"
echo "== (f) a PNG folder on disk: Trainer.fit against a bare loop fed by the same files; (m)"
timeout 330 "$PY" bench/gpu_check.py files "${ALLOW[@]}"
echo "== (g) --compile on and off"
if [[ ${#ALLOW[@]} -gt 0 ]] && ! command -v c++ > /dev/null && ! command -v g++ > /dev/null; then
    echo "(g) skipped: torch.compile on the CPU needs a C++ compiler, and there is none here"
else
    timeout 300 "$PY" bench/gpu_check.py compile "${ALLOW[@]}"
fi
echo "== (h) DDP on every GPU against N x one (two or more GPUs; the dry run: 2 CPU processes)"
timeout 600 "$PY" bench/gpu_check.py ddp "${ALLOW[@]}"
echo "== (i) torch.profiler over 20 steps, (k) synchronisations a step"
timeout 180 "$PY" bench/gpu_check.py profile "${ALLOW[@]}"
if [[ ${#ALLOW[@]} -gt 0 ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "(c), (d) and (e) need CUDA: skipped in the dry run"
    exit 0
fi
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
echo "== (l) the epoch end at 135,000 x 165 validation predictions, on this machine's cores"
timeout 150 "$PY" bench/epoch_end.py --features 2048 --rounds 3
