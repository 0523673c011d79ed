#!/usr/bin/env bash
# The reference model's quality on one GPU in about 8 minutes of device time: PromptIR's dense
# prompts against the library's CPL recipe (its defaults: sparse top-1 prompts, CPR and the
# label-routing term), two seeds each, the same data stream per seed, scored on photos never
# trained on (benchmarks/quality.py, which records the card's name in the JSON).
#
#   bash benchmarks/gpu_quality.sh                       # on a GPU: results/gpu_quality/
#   DEVICE=cpu PRECISION=fp32 PRESET=tiny STEPS=2 CROP=16 BATCH=2 \
#       bash benchmarks/gpu_quality.sh --strip 16 --report-crop 16 --threads 1   # a dry run
#
# PYTHON names the interpreter (python by default). The budget: 4 runs of STEPS steps each,
# plus scoring. Size STEPS from the step time the first
# run prints ("step 1 took ..."); the default assumes about 15 steps a second for the small
# preset at 128x128, batch 16, bf16.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_quality}
mkdir -p "$OUT"
exec "${PYTHON:-python}" benchmarks/quality.py \
    --preset "${PRESET:-small}" --mix "${MIX:-3task}" --steps "${STEPS:-1500}" \
    --crop "${CROP:-128}" --batch "${BATCH:-16}" --lr 1e-3 --ema-decay 0.995 \
    --device "${DEVICE:-cuda}" --precision "${PRECISION:-bf16}" \
    --variants dense cpl --cpl default --seeds 0 1 \
    --out "$OUT/runs" --json "$OUT/quality.json" "$@"
