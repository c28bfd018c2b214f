#!/usr/bin/env bash
# The accuracy study of issue 5, stage by stage. Every finished row is on disk at once and a rerun skips it, so
# each stage resumes after an interruption; learnable calibrations persist block by block (NMSIM_CACHE).
# Usage: bash scripts/accuracy_study.sh [stage ...]   stages: grid learnable headline gemma summary (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
NMSIM=${NMSIM:-.venv/bin/nmsim}
OUT=${OUT:-reports}
PATTERNS=2:4,4:8,8:16,16:32,unstructured:0.5
CRITERIA=magnitude,amber,clact
WEIGHTS=(--weight-patterns 2:4,8:16,unstructured:0.5 --weight-methods magnitude,wanda)
LEARN=(--learn-windows 64)  # CPU scale-down of the paper's 256 windows x 512 tokens (one epoch each)
stages=("$@"); [ ${#stages[@]} -eq 0 ] && stages=(grid learnable headline gemma summary)
for stage in "${stages[@]}"; do
  case $stage in
    grid)       # SmolLM2-135M, full grid without the learnable mitigation, 16,384 test tokens
      $NMSIM eval --patterns $PATTERNS --criteria $CRITERIA --mitigations none,median-shift,variance \
        "${WEIGHTS[@]}" --max-tokens 16384 --out "$OUT/study_smollm2_16k" ;;
    learnable)  # the same table, the learnable scale + shift rows
      $NMSIM eval --patterns $PATTERNS --criteria $CRITERIA --mitigations learnable "${LEARN[@]}" \
        --max-tokens 16384 --out "$OUT/study_smollm2_16k" ;;
    headline)   # dense, the best activation method per pattern (from the 16k grid), the weight baselines, 65,536 tokens
      $NMSIM eval --headline-from "$OUT/study_smollm2_16k.csv" "${LEARN[@]}" --max-tokens 65536 \
        --out "$OUT/study_smollm2_64k" ;;
    gemma)      # Gemma 3 270M, the same headline methods, 16,384 tokens
      $NMSIM eval --headline-from "$OUT/study_smollm2_16k.csv" "${LEARN[@]}" --model gemma3-270m \
        --max-tokens 16384 --out "$OUT/study_gemma3_16k" ;;
    summary)    # ratios (PPL_N:M - PPL_dense) / (PPL_16:32 - PPL_dense) per method, activation vs weight
      $NMSIM summary "$OUT/study_smollm2_16k.csv" "$OUT/study_smollm2_64k.csv" "$OUT/study_gemma3_16k.csv" \
        --out "$OUT/study_summary.md" ;;
    *) echo "unknown stage $stage (grid learnable headline gemma summary)" >&2; exit 2 ;;
  esac
done
