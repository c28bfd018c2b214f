#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (a few minutes on one GPU). Run it whenever a GPU is at hand:
#
#   bash scripts/gpu_check.sh [OUT_DIR]        # default OUT_DIR: gpu_check_out/
#
# It needs the project installed with a CUDA build of torch (scripts/setup.sh installs the CPU build; on a GPU
# machine: .venv/bin/pip install "torch==2.13.0" from the CUDA index your site uses, then pip install -e ".[test]").
# What it checks, each against the CPU's fp32 answer on the same inputs:
#   1. perplexity of the embedded model (SmolLM2-135M) dense and 8:16 magnitude on CUDA in float32 and bfloat16
#      vs the CPU in float32, on the first MAX_TOKENS tokens of WikiText-2 test (differences stated);
#   2. the selection path's masks on CUDA equal the CPU kernel's for the same float32 input (random, tied, zero,
#      ±inf inputs and real activations; 2:4, 8:16, 16:32; with and without median shift and variance correction);
#   3. pruned / dense forward time on the GPU (nmsim bench prune on CUDA, bfloat16 and float32);
#   4. the measured 2:4 column (`nmsim simulate --measure`): torch semi-structured 2:4 vs dense fp16 on the
#      validation set's square shapes, beside the published A100 measurement.
# Everything goes to OUT_DIR/gpu_check.log; OUT_DIR/gpu_check.md is the summary to copy into docs/gpu_check.md
# (with the GPU named) once it has run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check_out}"
MAX_TOKENS="${MAX_TOKENS:-4096}"
PY=.venv/bin/python
NMSIM=.venv/bin/nmsim
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

"$PY" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}); "
             "install a CUDA build of torch on a machine with a GPU")
print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

echo "== 1. perplexity: CUDA float32 / bfloat16 vs CPU float32 (first $MAX_TOKENS tokens)"
for run in "cpu float32" "cuda float32" "cuda bfloat16"; do
    set -- $run
    "$NMSIM" eval --model smollm2-135m --patterns 8:16 --criteria magnitude --mitigations none \
        --max-tokens "$MAX_TOKENS" --device "$1" --dtype "$2" --out "$OUT/ppl_$1_$2"
done
"$PY" - "$OUT" <<'EOF'
import sys
import pandas as pd
out = sys.argv[1]
tables = {run: pd.read_csv(f"{out}/ppl_{run}.csv").set_index("pattern").perplexity
          for run in ("cpu_float32", "cuda_float32", "cuda_bfloat16")}
cpu = tables["cpu_float32"]
lines = ["| pattern | CPU fp32 | CUDA fp32 | Δ % | CUDA bf16 | Δ % |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
for pattern in cpu.index:
    f32, b16 = tables["cuda_float32"][pattern], tables["cuda_bfloat16"][pattern]
    lines.append(f"| {pattern} | {cpu[pattern]:.4f} | {f32:.4f} | {100 * (f32 / cpu[pattern] - 1):+.3f} | "
                 f"{b16:.4f} | {100 * (b16 / cpu[pattern] - 1):+.3f} |")
print("\n".join(lines))
open(f"{out}/perplexity.md", "w").write("\n".join(lines) + "\n")
EOF

echo "== 2. selection masks: CUDA vs the CPU kernel, float32"
"$PY" - "$OUT" <<'EOF'
import sys
import torch
from nmsim.llm.models import load_model
from nmsim.patterns import parse_pattern
from nmsim.sparsify.criteria import LayerContext
from nmsim.sparsify.linear import sparsify_input
from nmsim.sparsify.masks import nm_mask
from nmsim.sparsify.mitigations import parse_mitigation
from nmsim.sparsify.criteria import get_criterion

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
    for spelling in ("2:4", "8:16", "16:32"):
        pattern = parse_pattern(spelling)
        equal = torch.equal(nm_mask(x, pattern.n, pattern.m), nm_mask(x.cuda(), pattern.n, pattern.m).cpu())
        lines.append(f"| {name} | {spelling} | (mask only) | {equal} |")
        bad += not equal
        for mitigation in ("none", "median-shift", "variance", "median-shift+variance"):
            layer = LayerContext(f"check.{name}", torch.randn(64, x.shape[1], generator=generator))
            common = (pattern, get_criterion("magnitude"), parse_mitigation(mitigation))
            cpu = sparsify_input(x, *common, layer, want_mask=True)
            layer_cuda = LayerContext(layer.name, layer.weight.cuda())
            gpu = sparsify_input(x.cuda(), *common, layer_cuda, want_mask=True)
            equal = torch.equal(cpu.keep, gpu.keep.cpu())
            lines.append(f"| {name} | {spelling} | {mitigation} | {equal} (values max |Δ| "
                         f"{(cpu.values - gpu.values.cpu()).abs().max().item():.2e}) |")
            bad += not equal
print("\n".join(lines))
open(f"{sys.argv[1]}/masks.md", "w").write("\n".join(lines) + "\n")
if bad:
    sys.exit(f"gpu_check: {bad} mask comparison(s) differ between CUDA and the CPU kernel")
EOF

echo "== 3. pruned / dense forward time on the GPU"
"$NMSIM" bench prune --device cuda --dtype bfloat16 | tee "$OUT/bench_bf16.txt"
"$NMSIM" bench prune --device cuda --dtype float32 | tee "$OUT/bench_fp32.txt"

echo "== 4. measured 2:4 (torch semi-structured, fp16) on the validation set's square shapes"
"$PY" - "$OUT" <<'EOF'
import sys
import pandas as pd
from nmsim.sim.measured import measure_gemm
from nmsim.sim.workload import Gemm
from nmsim.sim.validation import package_sets

published = [s for s in package_sets() if "2of4" in str(s)]
path = "../shared/reference/measurements/a100_fp16_square_2of4_slidesparse.csv"
table = pd.read_csv(path)
lines = ["| M=N=K | measured here 2:4 speedup | published A100 (cuSPARSELt) |", "| ---: | ---: | ---: |"]
for row in table.itertuples():
    here = measure_gemm(Gemm(0, "q", "prefill", row.M, row.K, row.N)).speedup
    lines.append(f"| {row.M} | {here:.3f} | {row.dense_cublaslt_us / row.sparse_2of4_cusparselt_us:.3f} |")
print("\n".join(lines))
open(f"{sys.argv[1]}/measured_2of4.md", "w").write("\n".join(lines) + "\n")
EOF
"$NMSIM" simulate --hw act-2of4 --model smollm2-135m --measure --seq 512 | tail -20

{
    echo "# GPU check: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))'), $(date -u +%Y-%m-%d)"
    echo
    echo "Command: \`bash scripts/gpu_check.sh\` (MAX_TOKENS=$MAX_TOKENS), nmsim $("$NMSIM" --version)."
    echo
    echo "## Perplexity, CUDA vs CPU float32"; echo; cat "$OUT/perplexity.md"; echo
    echo "## Selection masks, CUDA vs the CPU kernel"; echo; cat "$OUT/masks.md"; echo
    echo "## Pruned / dense forward time on the GPU"; echo; echo '```'; cat "$OUT/bench_bf16.txt" "$OUT/bench_fp32.txt"
    echo '```'; echo
    echo "## Measured 2:4"; echo; cat "$OUT/measured_2of4.md"
} > "$OUT/gpu_check.md"
echo "gpu_check: done; the summary is $OUT/gpu_check.md (copy it to docs/gpu_check.md)"
