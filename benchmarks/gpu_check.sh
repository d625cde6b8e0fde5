#!/usr/bin/env bash
# The GPU check of issue 24: one script, one table, under 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh             # on a machine with a CUDA GPU (about 7 minutes)
#   bash benchmarks/gpu_check.sh --dry-run   # anywhere: prints the commands and the table header, runs nothing heavy
#
# Steps: the chest-pelvis phantom (radseg phantom), radseg train --budget 5m --device cuda (GPU memory
# peak sampled by nvidia-smi), then benchmarks/gpu_check.py (predict --device cuda with the checkpoint's
# AMP and in fp32 on the held-out cases and on a 512x512x800 CT: seconds per case by stage, peak GPU
# memory, Dice, bf16 masks against fp32 ones) and benchmarks/infer_speed.py --device cuda --amp
# (radseg against MONAI's tutorial pipeline, 141 slices and the DICOM series; the 800-slice MONAI row
# needs ~13 GB of host RAM and several minutes, so it is left to the CPU benchmark).
# Environment: PYTHON (default: .venv/bin/python when present, else python), GPU_CHECK_WORK (default: a
# temporary folder, removed at the end).
set -euo pipefail

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (expected --dry-run or --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
WORK="${GPU_CHECK_WORK:-$(mktemp -d -t radseg-gpu-check-XXXXXX)}"
[[ -n "${GPU_CHECK_WORK:-}" ]] || trap 'rm -rf "$WORK"' EXIT

run() {  # print a command, and run it unless --dry-run
  echo "+ $*" >&2
  if [[ $DRY_RUN -eq 0 ]]; then "$@"; fi
}

gpu_peak_gb() {  # gpu_peak_gb FILE: the largest memory.used (MiB) nvidia-smi logged, in GiB
  sort -n "$1" 2>/dev/null | tail -1 | awk '{printf "%.2f", $1 / 1024}'
}

if [[ $DRY_RUN -eq 0 ]]; then
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "gpu_check.sh: no CUDA GPU visible to $PYTHON; run with --dry-run to see the steps" >&2; exit 2; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi

run "$PYTHON" -m radseg phantom --profile chest-pelvis --overwrite "$WORK/phantom"
SAMPLER=""
if [[ $DRY_RUN -eq 0 ]]; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$WORK/train_gpu_mib.txt" &
  SAMPLER=$!
fi
START=$(date +%s)
run "$PYTHON" -m radseg train --data "$WORK/phantom" --output "$WORK/run" --budget 5m --device cuda --overwrite
TRAIN_SECONDS=$(( $(date +%s) - START ))
[[ -z "$SAMPLER" ]] || kill "$SAMPLER"

echo
echo "radseg GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
if [[ $DRY_RUN -eq 1 ]]; then
  "$PYTHON" benchmarks/gpu_check.py --header
  echo "+ $PYTHON benchmarks/gpu_check.py --run $WORK/run --data $WORK/phantom --work $WORK --train-gpu-peak-gb G --train-seconds S" >&2
  echo "+ $PYTHON benchmarks/infer_speed.py --device cuda --amp --slices 141" >&2
  echo "gpu_check.sh: dry run, nothing measured"
  exit 0
fi
"$PYTHON" benchmarks/gpu_check.py --run "$WORK/run" --data "$WORK/phantom" --work "$WORK" \
  --train-gpu-peak-gb "$(gpu_peak_gb "$WORK/train_gpu_mib.txt")" --train-seconds "$TRAIN_SECONDS"
echo
"$PYTHON" benchmarks/infer_speed.py --device cuda --amp --slices 141
