"""Capture activation traces from a real (dense or pruned) run: prefill windows and greedy KV-cache decode.

A capture unit is one prefill window or one decode batch (B prompts, G decode steps each). Each finished unit
is written as one shard and the manifest is updated, so memory stays constant however long the capture, and an
interrupted capture resumes at the first unfinished unit.

Per captured linear input and token the trace holds: the kept mask (bit-packed), the count of natural zeros
(exact zeros in the input), the mitigation scalars (shift η, variance scale v) and, for the first few tokens
of each phase, the dense and pruned input values (fp16).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from nmsim.registry import DEFAULT_MODEL
from nmsim import __version__
from nmsim.errors import NmsimError
from nmsim.llm.device import dtype_name, model_device
from nmsim.llm.models import LoadedModel
from nmsim.sparsify.criteria import LayerContext
from nmsim.sparsify.linear import PrunedInput, PruningSession, SparsityConfig, cached_tokens, sparsified
from nmsim.sparsify.targets import PROJECTIONS, LinearSite
from nmsim.traces.format import FORMAT, FORMAT_VERSION, pack_mask, read_manifest, write_manifest, write_shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureSettings:
    """What to capture. Token counts: prefill = windows x seqlen; decode = prompts x decode_steps."""

    prefill_windows: int = 4
    seqlen: int = 512
    decode_prompts: int = 4
    decode_batch: int = 4
    prompt_tokens: int = 128
    decode_steps: int = 32
    values_tokens: int = 4  # per phase, stored as fp16 dense and pruned values
    layers: frozenset[int] | None = None  # None: every layer
    projections: tuple[str, ...] = PROJECTIONS

    def describe(self) -> dict:
        """The settings as JSON-ready values (as recorded in the manifest)."""
        layers = sorted(self.layers) if self.layers is not None else "all"
        return {**asdict(self), "layers": layers, "projections": list(self.projections)}


class _UnitRecorder:
    """Observer on the pruning session: collects one unit's per-input arrays and token coordinates.

    Inputs are registered during the first recorded forward call: a projection that reads the same input
    tensor as the one before it (q/k/v, gate/up) under a layer-independent criterion shares its mask, so the
    input is stored once under a key naming all its readers, e.g. ``L3.q+k+v``.
    """

    def __init__(self, config: SparsityConfig, settings: CaptureSettings, inputs: list[dict]):
        self.config = config
        self.settings = settings
        self.session: PruningSession | None = None
        self.inputs = inputs
        self._frozen = bool(inputs)
        self.phase = "prefill"
        self.sequence_ids = np.zeros(1, np.int32)
        self.values_left = 0
        self._values_now = 0
        self._reset()

    def _reset(self) -> None:
        self.arrays: dict[str, list[np.ndarray]] = {}
        self.sequences: list[np.ndarray] = []
        self.positions: list[np.ndarray] = []
        self._last_x: torch.Tensor | None = None

    def begin(self, phase: str, sequence_ids: np.ndarray, values_tokens: int) -> None:
        self._reset()
        self.phase, self.sequence_ids, self.values_left = phase, sequence_ids.astype(np.int32), values_tokens

    def on_forward(self, module, args, kwargs) -> None:
        """Model pre-hook: note which tokens this forward call holds and how many get their values stored."""
        if self.inputs:
            self._frozen = True
        if self.session.phase != self.phase:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        past = cached_tokens(kwargs)
        batch, length = ids.shape
        self.sequences.append(np.repeat(self.sequence_ids[:batch], length))
        self.positions.append(np.tile(np.arange(past, past + length, dtype=np.int32), batch))
        self._values_now = min(self.values_left, batch * length)
        self.values_left -= self._values_now

    def __call__(self, site: LinearSite, layer: LayerContext, x: torch.Tensor, result: PrunedInput) -> None:
        if self.session.phase != self.phase or site.projection not in self.settings.projections:
            return
        if self.settings.layers is not None and site.layer not in self.settings.layers:
            return
        if self.session.shareable and x is self._last_x:
            if not self._frozen and site.projection not in self.inputs[-1]["projections"]:
                self.inputs[-1]["projections"].append(site.projection)
            return
        self._last_x = x
        first = f"L{site.layer}.{site.projection}"
        if not self._frozen:
            self.inputs.append({"key": first, "layer": site.layer, "projections": [site.projection],
                                "k": x.shape[-1]})
        self._record(first, x.reshape(-1, x.shape[-1]), result)

    def _record(self, first: str, rows: torch.Tensor, result: PrunedInput) -> None:
        """Append one call's arrays (moved to the CPU; rows [T, K] may be on any device, in any dtype)."""
        store = self.arrays.setdefault
        store(f"{first}.natural_zeros", []).append((rows == 0).sum(dim=-1, dtype=torch.int32).cpu().numpy())
        if self.config.pattern.kind != "dense":
            store(f"{first}.kept", []).append(pack_mask(result.keep.cpu().numpy()))
        if result.scale is not None:
            store(f"{first}.scale", []).append(result.scale.reshape(-1).float().cpu().numpy())
        if result.shift is not None:
            shift = result.shift.reshape(-1).expand(rows.shape[0])
            store(f"{first}.shift", []).append(shift.float().cpu().numpy().copy())
        if self._values_now:
            store(f"{first}.dense_values", []).append(rows[: self._values_now].half().cpu().numpy())
            store(f"{first}.pruned_values", []).append(result.values[: self._values_now].half().cpu().numpy())

    def collect(self) -> dict[str, np.ndarray]:
        """This unit's arrays, concatenated over its forward calls, under their final input keys."""
        for entry in self.inputs:
            entry["key"] = f"L{entry['layer']}." + "+".join(entry["projections"])
        final = {f"L{e['layer']}.{e['projections'][0]}": e["key"] for e in self.inputs}
        tensors = {}
        for name, parts in self.arrays.items():
            first, _, field = name.rpartition(".")
            tensors[f"{final[first]}.{field}"] = np.concatenate(parts)
        tensors["token.sequence"] = np.concatenate(self.sequences)
        tensors["token.position"] = np.concatenate(self.positions)
        return tensors


def capture_trace(
    lm: LoadedModel,
    config: SparsityConfig,
    out_dir: str | Path,
    *,
    prefill_windows: torch.Tensor,
    decode_prompts: torch.Tensor,
    settings: CaptureSettings,
    data: dict,
    input_stats=None,
    seed: int = 42,
) -> Path:
    """Capture prefill windows [W, S] and greedy decode from prompts [P, L] into ``out_dir``; resumable.

    seed: recorded in the manifest; it is the seed of the calibration-window sampling (the capture itself draws
    no random numbers: windows and prompts are the first ones of the test split). The windows and prompts may be
    on any device: each unit moves to the model's. A model not in float32 has its dtype in the manifest's
    ``model`` entry (absent means float32, as in traces captured before dtypes were chosen).
    """
    out = Path(out_dir)
    device, precision = model_device(lm.model), dtype_name(lm.model.dtype)
    if config.targets.phase == "prefill" and decode_prompts.shape[0]:
        raise NmsimError("prefill-only pruning leaves decode tokens dense, so there are no decode masks to capture; "
                         "capture decode with --pattern dense, or pass --decode-prompts 0")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nmsim_version": __version__,
        "model": {"name": lm.name, "source": lm.source, **({} if precision == "float32" else {"dtype": precision})},
        "method": {
            "pattern": str(config.pattern),
            "density": config.pattern.density,
            "criterion": config.criterion,
            "mitigation": str(config.mitigation),
            "targets": str(config.targets),
            "kept_all": config.pattern.kind == "dense",
        },
        "data": data,
        "seed": seed,
        "capture": settings.describe(),
    }
    _check_selection(lm, config, settings)
    created = _created_by_capture(out)
    manifest = _start_or_resume(out, header)
    try:
        return _capture_units(lm, config, out, manifest, prefill_windows, decode_prompts, settings, input_stats)
    except BaseException:
        if not manifest["shards"]:  # failed before its first shard: leave nothing that blocks a rerun
            (out / "manifest.json").unlink(missing_ok=True)
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        raise


def _check_selection(lm: LoadedModel, config: SparsityConfig, settings: CaptureSettings) -> None:
    """Refuse, before anything is written, layers the model lacks and a selection that records no input."""
    from nmsim.sparsify.targets import find_linear_sites

    sites = find_linear_sites(lm.model)
    layers = sorted({site.layer for site in sites})
    if settings.layers is not None:
        missing = sorted(settings.layers - set(layers))
        if missing:
            raise NmsimError(f"--layers: the model {lm.name} has decoder layers {layers[0]}-{layers[-1]}, not "
                             f"{', '.join(map(str, missing[:8]))}{' ...' if len(missing) > 8 else ''}; the layers "
                             "and projections asked for select no pruned linear input there")
    chosen = [site for site in sites if config.targets.selects(site) and site.projection in settings.projections
              and (settings.layers is None or site.layer in settings.layers)]
    if not chosen:
        raise NmsimError(f"nothing to record: layers {settings.describe()['layers']} and projections "
                         f"{', '.join(settings.projections)} select no pruned linear input (targets "
                         f"{config.targets})")


def _created_by_capture(out: Path) -> bool:
    """Whether ``out`` is new (the capture may remove it again); refuses a path that is a file."""
    if out.exists() and not out.is_dir():
        raise NmsimError(f"--out {out}: a file, not a directory; choose a new or empty directory for the trace")
    return not out.exists()


def _capture_units(lm, config, out, manifest, prefill_windows, decode_prompts, settings, input_stats) -> Path:
    """Capture every unit not yet in ``manifest``, one shard each, then mark the trace complete."""
    threads, device = torch.get_num_threads(), model_device(lm.model)  # values (not masks) depend on the threads
    done = {(s["phase"], s["unit"]) for s in manifest["shards"]}
    recorder = _UnitRecorder(config, settings, manifest["inputs"])
    units = [("prefill", w) for w in range(prefill_windows.shape[0])]
    batches = range(0, decode_prompts.shape[0], settings.decode_batch)
    units += [("decode", b // settings.decode_batch) for b in batches]
    todo = [u for u in units if u not in done]
    if len(todo) < len(units):
        log.info("resuming %s: %d of %d units already captured", out, len(units) - len(todo), len(units))
    with torch.inference_mode(), sparsified(lm.model, config, input_stats, observer=recorder) as session:
        recorder.session = session
        handle = lm.model.register_forward_pre_hook(recorder.on_forward, with_kwargs=True)
        try:
            for phase, unit in tqdm(todo, desc=f"capturing {out.name}", unit="unit"):
                values = settings.values_tokens if unit == 0 else 0
                if phase == "prefill":
                    recorder.begin("prefill", np.array([unit]), values)
                    lm.model(prefill_windows[unit : unit + 1].to(device))
                else:
                    prompts = decode_prompts[unit * settings.decode_batch : (unit + 1) * settings.decode_batch]
                    prompts = prompts.to(device)
                    ids = np.arange(unit * settings.decode_batch, unit * settings.decode_batch + prompts.shape[0])
                    recorder.begin("decode", ids, values)
                    lm.model.generate(
                        prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=settings.decode_steps + 1,
                        min_new_tokens=settings.decode_steps + 1, do_sample=False,
                        pad_token_id=lm.tokenizer.eos_token_id or 0,
                    )
                if not recorder.inputs:
                    raise NmsimError(f"nothing to record: layers {settings.describe()['layers']} and projections "
                                     f"{', '.join(settings.projections)} select no pruned linear input")
                tensors = recorder.collect()
                entry = write_shard(out, f"{phase}-{unit:05d}.safetensors", tensors,
                                    {"phase": phase, "unit": str(unit)})
                manifest["inputs"] = recorder.inputs
                manifest["shards"].append({**entry, "phase": phase, "unit": unit,
                                           "tokens": int(len(tensors["token.sequence"])), "torch_threads": threads})
                write_manifest(out, manifest)
        finally:
            handle.remove()
    manifest["shards"].sort(key=lambda s: (s["phase"] != "prefill", s["unit"]))
    manifest["token_counts"] = {p: sum(s["tokens"] for s in manifest["shards"] if s["phase"] == p)
                                for p in ("prefill", "decode")}
    manifest["complete"] = True
    write_manifest(out, manifest)
    return out


def _start_or_resume(out: Path, header: dict) -> dict:
    if (out / "manifest.json").exists():
        manifest = read_manifest(out)
        differing = [k for k in header if k != "nmsim_version" and manifest.get(k) != header[k]]
        if differing and not manifest["shards"] and not (set(p.name for p in out.iterdir()) - {"manifest.json"}):
            log.info("%s: a capture with other settings stopped before its first shard; starting over", out)
            (out / "manifest.json").unlink()
        elif differing:
            raise NmsimError(f"{out} holds a trace captured with different settings ({', '.join(differing)}); "
                             "choose another output directory or delete it")
        if not differing:
            return manifest
    if out.exists() and any(out.iterdir()):
        raise NmsimError(f"{out} exists and is not an nmsim trace; choose an empty or new directory")
    out.mkdir(parents=True, exist_ok=True)
    manifest = {**header, "inputs": [], "shards": [], "token_counts": {}, "complete": False}
    write_manifest(out, manifest)
    return manifest


def run_capture(
    config: SparsityConfig,
    out_dir: str | Path,
    settings: CaptureSettings,
    *,
    model: str = DEFAULT_MODEL,
    data_dir: str | None = None,
    calibration_windows: int = 16,
    calibration_seed: int = 42,
    device: str = "cpu",
    dtype: str = "float32",
) -> Path:
    """Load the model (in ``dtype`` on ``device``, :mod:`nmsim.llm.device`) and WikiText-2, then capture: the first
    ``prefill_windows`` test windows, and decode from prompts cut from the windows after them (``prompt_tokens``
    each)."""
    from nmsim.sparsify.input_stats import load_or_calibrate
    from nmsim.llm.data import evaluation_windows, load_split
    from nmsim.llm.device import parse_dtype
    from nmsim.llm.models import load_model

    if settings.decode_prompts and settings.prompt_tokens > settings.seqlen:
        raise NmsimError(f"--prompt-tokens {settings.prompt_tokens}: a decode prompt is cut from one window, so it "
                         f"can be at most --seqlen {settings.seqlen} tokens (or pass --decode-prompts 0 to capture "
                         "no decode)")
    torch_dtype = parse_dtype(dtype)
    split = load_split("test", data_dir)
    lm = load_model(model, dtype=torch_dtype, device=device)
    windows = evaluation_windows(lm.token_ids(split), settings.seqlen, bos_id=lm.window_bos)
    needed = settings.prefill_windows + settings.decode_prompts
    if windows.shape[0] < needed:
        raise NmsimError(f"the test split has {windows.shape[0]} windows of {settings.seqlen} tokens; the capture "
                         f"needs {needed} (--prefill-windows {settings.prefill_windows} + --decode-prompts "
                         f"{settings.decode_prompts})")
    prompts = windows[settings.prefill_windows : needed, : settings.prompt_tokens]
    stats = None
    if config.needs_calibration:
        stats = load_or_calibrate(lm, data_dir, settings.seqlen, calibration_windows, calibration_seed)
    return capture_trace(
        lm, config, out_dir, prefill_windows=windows[: settings.prefill_windows], decode_prompts=prompts,
        settings=settings, data={"name": split.name, "sha256": split.sha256}, input_stats=stats,
        seed=calibration_seed,
    )
