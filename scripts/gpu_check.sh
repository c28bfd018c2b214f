#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (a few minutes on one GPU). Run it whenever a GPU is at hand:
#
#   bash scripts/gpu_check.sh [OUT_DIR]        # default OUT_DIR: gpu_check_out/
#
# It needs the project installed with a CUDA build of torch (scripts/setup.sh installs the CPU build; on a GPU
# machine install torch==2.13.0 from the CUDA wheel index your site uses, then pip install -e ".[test]").
# What it checks, each against the CPU's fp32 answer on the same inputs:
#   1. perplexity of the embedded model (SmolLM2-135M) dense and 8:16 magnitude on CUDA in float32 and bfloat16
#      vs the CPU in float32, on the first MAX_TOKENS tokens of WikiText-2 test (differences stated);
#   2. the selection path's masks on CUDA equal the CPU kernel's for the same float32 input (random, tied, zero,
#      ±inf inputs and real activations; 2:4, 8:16, 16:32; with and without median shift and variance correction);
#   3. pruned / dense forward time on the GPU (nmsim bench prune on CUDA, bfloat16 and float32);
#   4. the measured 2:4 column (`nmsim simulate --measure`): torch semi-structured 2:4 vs dense fp16 on the
#      validation set's square shapes, beside the published A100 measurement.
# Everything goes to OUT_DIR/gpu_check.log; OUT_DIR/gpu_check.md is the summary to copy into docs/gpu_check.md
# (with the GPU named) once it has run. GPU_CHECK_DEVICE=cpu runs the same steps on the CPU (a smoke test of this
# script, tests/test_gpu_check.py; step 4 needs CUDA and is left out); BENCH_ARGS passes options to the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check_out}"
MAX_TOKENS="${MAX_TOKENS:-4096}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
BENCH_ARGS="${BENCH_ARGS:-}"
PY="${NMSIM_PYTHON:-.venv/bin/python}"
NMSIM=("$PY" -m nmsim)
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

"$PY" - "$DEVICE" <<'PYEOF'
import sys
import torch
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit(f"gpu_check: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}); "
             "install a CUDA build of torch on a machine with a GPU")
name = torch.cuda.get_device_name(0) if sys.argv[1] == "cuda" else "none (a smoke run on the CPU)"
print(f"GPU: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}")
PYEOF
if [ "$DEVICE" = cuda ]; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true; fi

echo "== 1. perplexity: $DEVICE float32 / bfloat16 vs CPU float32 (first $MAX_TOKENS tokens)"
for run in "cpu float32" "$DEVICE float32" "$DEVICE bfloat16"; do
    set -- $run
    "${NMSIM[@]}" eval --model smollm2-135m --patterns 8:16 --criteria magnitude --mitigations none --no-fidelity \
        --max-tokens "$MAX_TOKENS" --device "$1" --dtype "$2" --out "$OUT/ppl_$1_$2"
done
"$PY" - "$OUT" "$DEVICE" <<'PYEOF'
import sys
import pandas as pd
out, device = sys.argv[1], sys.argv[2]
tables = {run: pd.read_csv(f"{out}/ppl_{run}.csv").set_index("pattern").perplexity
          for run in ("cpu_float32", f"{device}_float32", f"{device}_bfloat16")}
cpu = tables["cpu_float32"]
lines = [f"| pattern | CPU fp32 | {device} fp32 | Δ % | {device} bf16 | Δ % |",
         "| --- | ---: | ---: | ---: | ---: | ---: |"]
for pattern in cpu.index:
    f32, b16 = tables[f"{device}_float32"][pattern], tables[f"{device}_bfloat16"][pattern]
    lines.append(f"| {pattern} | {cpu[pattern]:.4f} | {f32:.4f} | {100 * (f32 / cpu[pattern] - 1):+.3f} | "
                 f"{b16:.4f} | {100 * (b16 / cpu[pattern] - 1):+.3f} |")
print("\n".join(lines))
open(f"{out}/perplexity.md", "w").write("\n".join(lines) + "\n")
PYEOF

echo "== 2. selection masks: $DEVICE vs the CPU kernel, float32"
"$PY" - "$OUT" "$DEVICE" <<'PYEOF'
import sys
import torch
from nmsim.llm.models import load_model
from nmsim.patterns import parse_pattern
from nmsim.sparsify.criteria import LayerContext, get_criterion
from nmsim.sparsify.linear import sparsify_input
from nmsim.sparsify.masks import nm_mask
from nmsim.sparsify.mitigations import parse_mitigation

out, device = sys.argv[1], sys.argv[2]
generator = torch.Generator().manual_seed(0)
inputs = {
    "random": torch.randn(256, 1024, generator=generator),
    "tied": torch.randint(-3, 4, (256, 1024), generator=generator).float(),
    "zero": torch.zeros(64, 1024),
    "inf": torch.where(torch.rand(256, 1024, generator=generator) < 0.05, torch.inf, 1.0)
           * torch.sign(torch.randn(256, 1024, generator=generator)),
}
lm = load_model("smollm2-135m")
captured = []
handle = lm.model.model.layers[3].mlp.down_proj.register_forward_pre_hook(lambda m, a: captured.append(a[0][0]))
with torch.no_grad():
    lm.model(torch.arange(1, 129)[None])
handle.remove()
inputs["real (layer 3 down_proj)"] = captured[0].float()
bad = 0
lines = ["| input | pattern | mitigation | masks equal |", "| --- | --- | --- | --- |"]
for name, x in inputs.items():
    weight = torch.randn(64, x.shape[1], generator=generator)
    for spelling in ("2:4", "8:16", "16:32"):
        pattern = parse_pattern(spelling)
        equal = torch.equal(nm_mask(x, pattern.n, pattern.m), nm_mask(x.to(device), pattern.n, pattern.m).cpu())
        lines.append(f"| {name} | {spelling} | (mask only) | {equal} |")
        bad += not equal
        for mitigation in ("none", "median-shift", "variance", "median-shift+variance"):
            common = (pattern, get_criterion("magnitude"), parse_mitigation(mitigation))
            here = sparsify_input(x, *common, LayerContext(f"check.{name}", weight), want_mask=True)
            there = sparsify_input(x.to(device), *common, LayerContext(f"check.{name}", weight.to(device)),
                                   want_mask=True)
            equal = torch.equal(here.keep, there.keep.cpu())
            finite = torch.isfinite(here.values)
            gap = (here.values - there.values.cpu())[finite].abs().max().item() if finite.any() else 0.0
            lines.append(f"| {name} | {spelling} | {mitigation} | {equal} (finite values max abs diff {gap:.2e}) |")
            bad += not equal
print("\n".join(lines))
open(f"{out}/masks.md", "w").write("\n".join(lines) + "\n")
if bad:
    sys.exit(f"gpu_check: {bad} mask comparison(s) differ between {device} and the CPU kernel")
PYEOF

echo "== 3. pruned / dense forward time on $DEVICE"
"${NMSIM[@]}" bench prune --device "$DEVICE" --dtype bfloat16 --no-load-times $BENCH_ARGS | tee "$OUT/bench_bf16.txt"
"${NMSIM[@]}" bench prune --device "$DEVICE" --dtype float32 --no-load-times $BENCH_ARGS | tee "$OUT/bench_fp32.txt"

if [ "$DEVICE" != cuda ]; then
    echo "== 4. measured 2:4: needs CUDA, left out"
    echo "not measured (no CUDA device in this run)" > "$OUT/measured_2of4.md"
else
    echo "== 4. measured 2:4 (torch semi-structured, fp16) on the validation set's square shapes"
    "$PY" - "$OUT" <<'PYEOF'
import sys
import pandas as pd
from nmsim.sim.measured import measure_gemm
from nmsim.sim.workload import Gemm

table = pd.read_csv("../shared/reference/measurements/a100_fp16_square_2of4_slidesparse.csv")
lines = ["| M=N=K | 2:4 speedup measured here | published A100 (cuSPARSELt) |", "| ---: | ---: | ---: |"]
for row in table.itertuples():
    here = measure_gemm(Gemm(0, "q", "prefill", row.M, row.K, row.N)).speedup
    lines.append(f"| {row.M} | {here:.3f} | {row.dense_cublaslt_us / row.sparse_2of4_cusparselt_us:.3f} |")
print("\n".join(lines))
open(f"{sys.argv[1]}/measured_2of4.md", "w").write("\n".join(lines) + "\n")
PYEOF
    "${NMSIM[@]}" simulate --hw act-2of4 --model smollm2-135m --measure --seq 512 | tail -20
fi

GPU_NAME=$("$PY" -c "import torch, sys; print(torch.cuda.get_device_name(0) if sys.argv[1] == 'cuda' else 'no GPU (a smoke run on the CPU)')" "$DEVICE")
{
    echo "# GPU check: $GPU_NAME, $(date -u +%Y-%m-%d)"
    echo
    echo "Command: \`bash scripts/gpu_check.sh\` (MAX_TOKENS=$MAX_TOKENS), $("${NMSIM[@]}" --version)."
    echo
    echo "## Perplexity, $DEVICE vs CPU float32"; echo; cat "$OUT/perplexity.md"; echo
    echo "## Selection masks, $DEVICE vs the CPU kernel"; echo; cat "$OUT/masks.md"; echo
    echo "## Pruned / dense forward time on $DEVICE"; echo; echo '```'; cat "$OUT/bench_bf16.txt" "$OUT/bench_fp32.txt"
    echo '```'; echo
    echo "## Measured 2:4"; echo; cat "$OUT/measured_2of4.md"
} > "$OUT/gpu_check.md"
echo "gpu_check: done; the summary is $OUT/gpu_check.md (copy it to docs/gpu_check.md)"
