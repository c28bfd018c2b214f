"""Derive timing.yaml's kernel_fixed_us and sparse_kernel_fixed_us from the smallest square GEMM (64³) of the
SlideSparse A100 80 GB PCIe set: the measured time minus what the model already charges (tiles, memory latency),
iterated to a fixed point because the mapper's choice (split-K pays a second kernel) depends on the value.

Run: .venv/bin/python scripts/calibrate_kernel_costs.py   (prints the two values; copy them into timing.yaml)
"""

import dataclasses

from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import parse_pattern
from nmsim.sim.simulate import clear_cache, simulate_gemm
from nmsim.sim.timing import load_timing
from nmsim.sim.usage import DENSE, LayerUse, layer_use
from nmsim.sim.workload import Gemm

DENSE_US, SPARSE_US = 4.014, 5.734  # 64x64x64 cuBLASLt / cuSPARSELt, shared/reference/measurements


def _time_us(timing, spec, use) -> float:
    clear_cache()
    return simulate_gemm(Gemm(0, "q", "prefill", 64, 64, 64), spec, use, timing=timing).cycles / spec.clock_GHz / 1e3


def main() -> None:
    dense, sparse = AcceleratorSpec.from_name("a100-80gb-pcie"), AcceleratorSpec.from_name("a100-80gb-pcie-2of4")
    dense_use, sparse_use = LayerUse(DENSE, "none", 1.0), layer_use(sparse, parse_pattern("2:4"), None, ideal=True)
    timing = dataclasses.replace(load_timing(), kernel_fixed_us=0.0, sparse_kernel_fixed_us=0.0)
    for _ in range(10):
        fixed = timing.kernel_fixed_us + DENSE_US - _time_us(timing, dense, dense_use)
        extra = timing.sparse_kernel_fixed_us + SPARSE_US - _time_us(timing, sparse, sparse_use)
        timing = dataclasses.replace(timing, kernel_fixed_us=max(fixed, 0.0), sparse_kernel_fixed_us=max(extra, 0.0))
    print(f"kernel_fixed_us: {timing.kernel_fixed_us:.2f}   (64³ dense measured {DENSE_US} µs, modelled "
          f"{_time_us(timing, dense, dense_use):.3f} µs)")
    print(f"sparse_kernel_fixed_us: {timing.sparse_kernel_fixed_us:.2f}   (64³ 2:4 measured {SPARSE_US} µs, "
          f"modelled {_time_us(timing, sparse, sparse_use):.3f} µs)")


if __name__ == "__main__":
    main()
