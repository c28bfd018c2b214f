"""Speed benchmark: pruned vs dense forward time on the same tokens, and cold vs cached model load.

Timings are interleaved (dense, pruned, dense, ...) and the best of ``repeats`` is kept, so the ratios come
from one run on one machine state. The goal for magnitude 8:16 is a ratio of at most 1.15 (1.0 is the floor).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass

import torch

from nmsim.llm.data import evaluation_windows, load_split, tokenize
from nmsim.llm.models import cache_root, load_model
from nmsim.llm.perplexity import window_nll
from nmsim.patterns import parse_pattern
from nmsim.sparsify.engine import SparsityConfig, sparsified
from nmsim.sparsify.mitigations import parse_mitigation

BENCH_METHODS = (("8:16", "none"), ("8:16", "median-shift"), ("2:4", "none"), ("16:32", "none"))


@dataclass(frozen=True)
class BenchResult:
    name: str
    seconds: float
    ratio_to_dense: float | None = None


def _load_seconds(model: str, cache_dir: str) -> float:
    previous = os.environ.get("NMSIM_CACHE")
    os.environ["NMSIM_CACHE"] = cache_dir
    try:
        started = time.perf_counter()
        load_model(model)
        return time.perf_counter() - started
    finally:
        if previous is None:
            del os.environ["NMSIM_CACHE"]
        else:
            os.environ["NMSIM_CACHE"] = previous


@torch.inference_mode()
def run_pruning_benchmark(model: str = "smollm2-135m", windows: int = 2, repeats: int = 3) -> list[BenchResult]:
    """Forward-time ratios for :data:`BENCH_METHODS` and model load times (cold = GGUF conversion)."""
    with tempfile.TemporaryDirectory(prefix="nmsim-bench-cache-") as scratch:
        cold = _load_seconds(model, scratch)
        cached = _load_seconds(model, scratch)
    lm = load_model(model)
    ids = tokenize(lm.tokenizer, load_split("test"), cache_root() / "tokens")
    bos = lm.tokenizer.bos_token_id if lm.bos_per_window else None
    batch = evaluation_windows(ids, 512, bos_id=bos, max_tokens=512 * windows)
    configs = {"dense": None} | {
        f"{p} magnitude {m}": SparsityConfig(parse_pattern(p), "magnitude", parse_mitigation(m))
        for p, m in BENCH_METHODS
    }

    def forward(config: SparsityConfig | None) -> float:
        started = time.perf_counter()
        if config is None:
            window_nll(lm.model, batch)
        else:
            with sparsified(lm.model, config):
                window_nll(lm.model, batch)
        return time.perf_counter() - started

    for config in configs.values():  # warm-up: allocator, kernel compilation
        forward(config)
    best = {name: math.inf for name in configs}
    for _ in range(repeats):
        for name, config in configs.items():
            best[name] = min(best[name], forward(config))
    results = [BenchResult(f"forward {name} ({batch.numel()} tokens)", best[name], best[name] / best["dense"])
               for name in configs]
    results += [BenchResult("model load, cold (GGUF dequantize + cache write)", cold),
                BenchResult("model load, cached (safetensors)", cached, None)]
    return results
