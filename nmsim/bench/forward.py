"""Speed benchmarks: pruned vs dense forward time on the same tokens, cold vs cached model load, trace capture vs
the same pruned run without capture, and one learnable calibration from scratch.

Timings are interleaved (dense, pruned, dense, ...) and the best of ``repeats`` is kept, so the ratios come
from one run on one machine state. The goal for magnitude 8:16, with and without the median shift, is a ratio of
at most 1.10 on the CPU (1.0 is the floor).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch

from nmsim.registry import DEFAULT_MODEL
from nmsim.bench import BenchResult, best_of
from nmsim.llm.data import evaluation_windows, load_split
from nmsim.llm.models import load_model
from nmsim.llm.perplexity import window_nll
from nmsim.patterns import parse_pattern
from nmsim.sparsify.linear import SparsityConfig, sparsified
from nmsim.sparsify.mitigations import parse_mitigation

BENCH_METHODS = (("8:16", "none"), ("8:16", "median-shift"), ("2:4", "none"), ("16:32", "none"))
SEQLEN = 512  # tokens per window


def run_calibration_benchmark(model: str = DEFAULT_MODEL, windows: int = 64, pattern: str = "8:16",
                              steps: int | None = None, seqlen: int = SEQLEN, device: str = "cpu",
                              dtype: str = "float32") -> list[BenchResult]:
    """Time one learnable scale + shift calibration from scratch (every block, ``windows`` windows x ``seqlen``;
    the model in ``dtype`` on ``device``)."""
    from nmsim.llm.data import calibration_windows
    from nmsim.llm.device import parse_dtype
    from nmsim.sparsify.learnable import LearnRecipe, train_scale_shift

    lm = load_model(model, dtype=parse_dtype(dtype), device=device)
    recipe = LearnRecipe(windows=windows, seqlen=seqlen, steps=steps)
    sample = calibration_windows(lm.token_ids(load_split("calibration")), windows + recipe.heldout_windows, seqlen,
                                 seed=recipe.seed, bos_id=lm.window_bos)
    config = SparsityConfig(parse_pattern(pattern), "magnitude", parse_mitigation("learnable"))
    reports = []
    with tempfile.TemporaryDirectory() as scratch:
        seconds = best_of(lambda: reports.extend(train_scale_shift(
            lm.model, config, recipe, sample, Path(scratch) / "learned.safetensors")[1]), 1)
    improved = sum(r.heldout_mse_learned < r.heldout_mse_pruned for r in reports)
    mean_drop = sum(1 - r.heldout_mse_learned / r.heldout_mse_pruned for r in reports) / len(reports)
    label = (f"learnable calibration {model} {pattern}, {windows} windows x {seqlen}, "
             f"{recipe.steps_per_block} steps/block")
    return [
        BenchResult(label, seconds, "s"),
        BenchResult(f"  per block ({len(reports)} blocks)", seconds / len(reports), "s"),
        BenchResult("  blocks whose held-out MSE fell", improved, "blk"),
        BenchResult("  mean held-out MSE reduction", 100 * mean_drop, "%"),
    ]


def _load_seconds(model: str, cache_dir: str) -> float:
    previous = os.environ.get("NMSIM_CACHE")
    os.environ["NMSIM_CACHE"] = cache_dir
    try:
        return best_of(lambda: load_model(model), 1)
    finally:
        if previous is None:
            del os.environ["NMSIM_CACHE"]
        else:
            os.environ["NMSIM_CACHE"] = previous


def _test_windows(lm, windows: int, seqlen: int) -> torch.Tensor:
    """The first ``windows`` windows of ``seqlen`` tokens of the test split."""
    return evaluation_windows(lm.token_ids(load_split("test")), seqlen, bos_id=lm.window_bos,
                              max_tokens=seqlen * windows)


@torch.inference_mode()
def run_pruning_benchmark(model: str = DEFAULT_MODEL, windows: int = 2, repeats: int = 3,
                          seqlen: int = SEQLEN, device: str = "cpu", dtype: str = "float32",
                          load_times: bool = True) -> list[BenchResult]:
    """Forward-time ratios for :data:`BENCH_METHODS` (the model in ``dtype`` on ``device``; a CUDA forward is
    timed to its end) and, with ``load_times``, model load times (cold = GGUF conversion)."""
    from nmsim.llm.device import model_device, parse_dtype

    if load_times:
        with tempfile.TemporaryDirectory(prefix="nmsim-bench-cache-") as scratch:
            cold = _load_seconds(model, scratch)
            cached = _load_seconds(model, scratch)
    lm = load_model(model, dtype=parse_dtype(dtype), device=device)
    on_gpu = model_device(lm.model).type == "cuda"
    batch = _test_windows(lm, windows, seqlen).to(model_device(lm.model))
    configs = {"dense": None} | {
        f"{p} magnitude {m}": SparsityConfig(parse_pattern(p), "magnitude", parse_mitigation(m))
        for p, m in BENCH_METHODS
    }

    def forward(config: SparsityConfig | None) -> None:
        if config is None:
            window_nll(lm.model, batch)
        else:
            with sparsified(lm.model, config):
                window_nll(lm.model, batch)
        if on_gpu:  # kernels run asynchronously: time them to their end
            torch.cuda.synchronize()

    for config in configs.values():  # warm-up: allocator, kernel compilation
        forward(config)
    best = {name: math.inf for name in configs}
    for _ in range(repeats):  # interleaved: one run of each per repeat
        for name, config in configs.items():
            best[name] = min(best[name], best_of(lambda: forward(config), 1))
    where = "" if (device, dtype) == ("cpu", "float32") else f", {dtype} on {model_device(lm.model)}"
    results = [BenchResult(f"forward {name} ({batch.numel()} tokens{where})", best[name], "s",
                           best[name] / best["dense"]) for name in configs]
    if load_times:
        results += [BenchResult("model load, cold (GGUF dequantize + cache write)", cold, "s"),
                    BenchResult("model load, cached (safetensors)", cached, "s")]
    return results


@torch.inference_mode()
def run_capture_benchmark(model: str = DEFAULT_MODEL, windows: int = 4, repeats: int = 2,
                          seqlen: int = SEQLEN) -> list[BenchResult]:
    """Capture time relative to the same pruned run without capture (goal <= 1.3), and stored mask bits
    per activation element (bit-packed masks take 1 bit; the limit is ⌈log2 C(M, N)⌉ / M)."""
    from nmsim.traces.capture import CaptureSettings, capture_trace
    from nmsim.traces.format import Trace

    lm = load_model(model)
    batch = _test_windows(lm, windows, seqlen)
    settings = CaptureSettings(prefill_windows=batch.shape[0], seqlen=seqlen, decode_prompts=0, values_tokens=0)
    results = []
    for pattern, mitigation in (("8:16", "none"), ("8:16", "median-shift")):
        config = SparsityConfig(parse_pattern(pattern), "magnitude", parse_mitigation(mitigation))

        def run_pruned() -> None:
            with sparsified(lm.model, config):
                for window in batch:
                    lm.model(window[None])

        best_run = best_capture = math.inf
        with tempfile.TemporaryDirectory(prefix="nmsim-bench-trace-") as scratch:
            for attempt in range(repeats):  # interleaved: the run without capture, then the capture
                out = Path(scratch) / f"trace-{attempt}"
                best_run = min(best_run, best_of(run_pruned, 1))
                best_capture = min(best_capture, best_of(
                    lambda: capture_trace(lm, config, out, prefill_windows=batch, decode_prompts=batch[:0],
                                          settings=settings, data={}), 1))
            trace = Trace.open(out)
            mask_bytes = elements = 0
            for _, arrays in trace.shards():
                for site in trace.inputs:
                    mask_bytes += arrays[f"{site.key}.kept"].nbytes
                    elements += arrays[f"{site.key}.kept"].shape[0] * site.k
            on_disk = sum(s["bytes"] for s in trace.manifest["shards"])
        name = f"{pattern} magnitude {mitigation}"
        results.append(BenchResult(f"capture {name} ({batch.numel()} tokens) vs run without", best_capture, "s",
                                   best_capture / best_run))
        limit = math.ceil(math.log2(math.comb(16, 8))) / 16
        results.append(BenchResult(f"  stored mask bits per activation element (limit {limit:.3f})",
                                   8 * mask_bytes / elements, "bit"))
        results.append(BenchResult("  trace bytes per token (masks, scalars, headers)", on_disk / batch.numel(),
                                   "B"))
    return results
