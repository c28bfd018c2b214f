"""Calibration statistics of every linear input, measured on the dense model over calibration windows.

Per prunable linear layer (module name -> tensors):

- ``column_rms`` [K]: sqrt(mean over tokens of x_k²), the column norm used by the causal CLACT criterion;
- ``median_mean`` []: the mean over tokens of the per-token median, the static shift η.

Statistics are measured on the dense model (not under pruning), so one calibration serves every pattern. They are
summed on the model's device and returned on the CPU (float32), as :func:`load_stats` returns them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from nmsim.io import atomic_write_bytes
from nmsim.llm.data import calibration_windows, load_split
from nmsim.llm.device import dtype_name, model_device
from nmsim.llm.models import LoadedModel, cache_root
from nmsim.sparsify.targets import find_linear_sites

log = logging.getLogger(__name__)

InputStats = dict[str, dict[str, torch.Tensor]]


@torch.inference_mode()
def calibrate(
    model: torch.nn.Module, windows: torch.Tensor, on_window: Callable[[int], None] | None = None
) -> InputStats:
    """Run the dense model over ``windows`` [W, S] (any device) one at a time and collect per-layer input
    statistics (on the CPU)."""
    sums: dict[str, list] = {}

    def collector(name: str):
        def hook(module, args):
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            medians = args[0].reshape(-1, args[0].shape[-1]).median(dim=-1).values.double()
            entry = sums.setdefault(name, [torch.zeros(x.shape[-1], dtype=torch.float64, device=x.device), 0.0, 0])
            entry[0] += (x * x).sum(dim=0)
            entry[1] += float(medians.sum())
            entry[2] += x.shape[0]

        return hook

    handles = [site.module.register_forward_pre_hook(collector(site.name)) for site in find_linear_sites(model)]
    device = model_device(model)
    try:
        for window in windows:
            model(window[None].to(device))
            if on_window is not None:
                on_window(1)
    finally:
        for handle in handles:
            handle.remove()
    return {
        name: {
            "column_rms": (squares / count).sqrt().float().cpu(),
            "median_mean": torch.tensor(median_sum / count, dtype=torch.float32),
        }
        for name, (squares, median_sum, count) in sums.items()
    }


def save_stats(path: Path, stats: InputStats) -> None:
    """Write statistics atomically as safetensors (keys '<module>::<statistic>')."""
    flat = {f"{name}::{key}": value.cpu().contiguous() for name, entry in stats.items() for key, value in entry.items()}
    atomic_write_bytes(path, save(flat, metadata={"format": "nmsim-input-stats", "version": "1"}))


def load_stats(path: Path) -> InputStats:
    stats: InputStats = {}
    for key, value in load_file(str(path)).items():
        name, _, stat = key.partition("::")
        stats.setdefault(name, {})[stat] = value
    return stats


def load_or_calibrate(lm: LoadedModel, data_dir: str | None, seqlen: int, windows: int, seed: int) -> InputStats:
    """Statistics of ``lm`` on ``windows`` random calibration windows (seeded), computed once and cached (per
    dtype: a float32 file keeps its name from before dtypes were chosen)."""
    split = load_split("calibration", data_dir)
    precision = dtype_name(lm.model.dtype)
    tag = "" if precision == "float32" else f"-{precision}"
    path = (cache_root() / "calibration"
            / f"{lm.name}-{windows}x{seqlen}-seed{seed}-{split.sha256[:12]}{tag}.safetensors")
    if path.exists():
        return load_stats(path)
    sample = calibration_windows(lm.token_ids(split), windows, seqlen, seed=seed, bos_id=lm.window_bos)
    with tqdm(total=len(sample), desc=f"calibrating on {split.name}", unit="window", leave=False) as bar:
        stats = calibrate(lm.model, sample, on_window=bar.update)
    save_stats(path, stats)
    return stats
