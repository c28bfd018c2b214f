"""Generative fidelity beside perplexity: how far a pruned model's next-token distribution and greedy text move from
the dense model's, with the dense side computed once per evaluation and cached on disk.

Conventions, those of llama.cpp's ``llama-perplexity --kl-divergence`` (``tools/perplexity/perplexity.cpp``):

- **KL divergence** per scored token, KL(dense ‖ pruned) = Σ_v p(v) (ln p(v) − ln q(v)) in nats over the full
  vocabulary, p the dense model's next-token distribution and q the pruned one's. ``kl_mean_nats`` is the mean over
  every scored token of the run (llama.cpp's "Mean KLD"), not a mean of window means.
- **Top-1 agreement** (llama.cpp's "Same top p"): the fraction of scored tokens at which the pruned model's most
  likely next token is the dense model's.
- **Scored tokens**: those the perplexity scores. llama.cpp scores the second half of every n_ctx chunk (its
  perplexity does the same); nmsim's perplexity scores every predicted token of every window (S − 1 per window), so
  the KL does too.
- llama.cpp stores the base log-probabilities as 16-bit codes linear over the 16 nats below each token's maximum and
  skips p < e^-16. Here they are float16 over the whole vocabulary (nothing skipped) and renormalised before use; a
  float16 log-probability ℓ is off by at most |ℓ|·2^-11, so the tokens that carry the mass (|ℓ| small) are the most
  exact; on SmolLM2 (2:4, 16:32, unstructured 50 %) it moves a window's mean KL by under 1e-5 of its value and a
  token's by under 1.2e-3 nats. The dense argmax is kept exactly (int32, from the fp32 logits).

**Greedy agreement** (not a llama.cpp statistic): :data:`GREEDY_PROMPTS` prompts of :data:`GREEDY_PROMPT_TOKENS`
tokens (BOS first where the model puts BOS at every window) at seeded random offsets of the WikiText-2 test tokens
(seed :data:`GREEDY_SEED`); the dense and the pruned model each generate :data:`GREEDY_TOKENS` tokens greedily (one
prefill, then one decode step per token with the KV cache, all prompts as one batch, so prefill-only targets decode
dense and a batch-dependent criterion such as CLACT sees the prompts together; EOS is a token like any other). A
prompt's agreement is the number of tokens generated before the first one that differs from dense (G when none
does); ``greedy_agreement_tokens`` is its mean over the prompts.

**The dense reference** (:func:`dense_reference`) lives under ``<cache>/dense_reference/<model>-<key>/``, keyed by
the model's source and a sha256 of its weights, the evaluation windows' token ids (data, tokenizer, window length,
BOS, token count), the prompts and G: ``log_probs.npy`` [W, S − 1, V] float16 (memory-mapped by every row:
W·(S − 1)·V·2 bytes, 1.6 GB for SmolLM2's 49,152-token vocabulary on 16,384 tokens), ``top1.npy`` [W, S − 1] int32
and ``greedy.npy`` [P, G] int64. It is built in ``<key>.partial/`` window by window (resumable) and renamed into
place when complete; a lock file keeps two processes from building it at once.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nmsim.errors import NmsimError
from nmsim.io import atomic_write_bytes, atomic_write_text, disk_full_error, exclusive_lock, is_disk_full
from nmsim.llm.data import calibration_windows
from nmsim.llm.device import model_device
from nmsim.llm.models import LoadedModel, cache_root

log = logging.getLogger(__name__)

GREEDY_PROMPTS = 16  # P: prompts, generated as one batch
GREEDY_PROMPT_TOKENS = 128  # L: tokens per prompt, BOS included where the model takes one
GREEDY_TOKENS = 32  # G: tokens generated per prompt
GREEDY_SEED = 42  # the prompts' offsets in the test tokens
FORMAT_VERSION = 1  # of the cached dense reference
_SPARE_BYTES = 1 << 30  # disk left free after the reference is written


@dataclass(frozen=True)
class GreedySettings:
    """The greedy-agreement prompts: how many, how long, how many tokens to generate, and their seed."""

    prompts: int = GREEDY_PROMPTS
    prompt_tokens: int = GREEDY_PROMPT_TOKENS
    tokens: int = GREEDY_TOKENS
    seed: int = GREEDY_SEED

    def describe(self) -> str:
        return (f"{self.prompts} prompts x {self.prompt_tokens} tokens at seeded offsets (seed {self.seed}) of the "
                f"test split, {self.tokens} tokens generated greedily")


# --- pure functions on logits ---------------------------------------------------------------------------------------
def kl_and_top1(dense_log_probs: torch.Tensor, dense_top1: torch.Tensor, logits: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(dense ‖ pruned) per token and whether the argmaxes agree.

    dense_log_probs: [T, V] (any float dtype; renormalised in float32), dense_top1: [T] int, logits: [T, V] of the
    pruned model -> ([T] float64 nats, [T] bool).
    """
    p_log = dense_log_probs.float()
    p_log = p_log - torch.logsumexp(p_log, dim=-1, keepdim=True)
    q_log = torch.log_softmax(logits.float(), dim=-1)
    p = p_log.exp()
    terms = torch.where(p > 0, p * (p_log - q_log), torch.zeros((), dtype=p.dtype))  # 0·ln 0 = 0
    return terms.sum(dim=-1, dtype=torch.float64), logits.argmax(dim=-1) == dense_top1


def agreement_lengths(reference: torch.Tensor, generated: torch.Tensor) -> np.ndarray:
    """Tokens generated before the first divergence from ``reference``, per prompt.

    reference: [P, G] the dense continuations; generated: [P, n ≤ G], stopped early only once every prompt had
    diverged -> [P] int64 in 0..G.
    """
    n = generated.shape[1]
    same = (generated == reference[:, :n]).numpy()
    first = np.where(same.all(axis=1), n, np.argmin(same, axis=1))
    if n < reference.shape[1] and (first == n).any():
        raise NmsimError(f"greedy agreement: generation stopped after {n} of {reference.shape[1]} tokens while a "
                         "prompt still agreed with the dense continuation")
    return first.astype(np.int64)


def _cache_keyword(model: torch.nn.Module) -> str:
    """The forward argument that takes the KV cache (transformers 5: ``cache``; earlier: ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _kv_cache(output):
    """The KV cache of a forward call's output (``cache`` in transformers 5, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


@torch.inference_mode()
def greedy_generate(model: torch.nn.Module, prompts: torch.Tensor, tokens: int,
                    reference: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy continuations: prompts [P, L] -> [P, n] token ids, n = ``tokens``, or fewer when ``reference``
    [P, tokens] is given and every prompt has already diverged from it. One prefill, then one decode step per token
    through the KV cache (the pruning session sees prefill and decode as a real generation would)."""
    keyword = _cache_keyword(model)
    device = model_device(model)
    out = model(prompts.to(device), use_cache=True)
    reference = reference.to(out.logits.device) if reference is not None else None
    generated = []
    agreeing = torch.ones(prompts.shape[0], dtype=torch.bool, device=out.logits.device)
    for step in range(tokens):
        token = out.logits[:, -1].argmax(dim=-1)  # [P]
        generated.append(token)
        if reference is not None:
            agreeing &= token == reference[:, step]
            if not agreeing.any():
                break
        if step + 1 < tokens:
            out = model(token[:, None].to(device), use_cache=True, **{keyword: _kv_cache(out)})
    return torch.stack(generated, dim=1).cpu()


# --- the dense reference --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DenseReference:
    """The dense model's outputs on the evaluation windows and the greedy prompts (see the module docstring)."""

    directory: Path
    log_probs: np.ndarray  # [W, S-1, V] float16 memmap: dense log-probabilities of every scored position
    top1: np.ndarray  # [W, S-1] int32: dense argmax of every scored position
    prompts: torch.Tensor  # [P, L] int64
    continuations: torch.Tensor  # [P, G] int64: dense greedy continuations


class FidelityScorer:
    """Per-window KL sums and top-1 matches of one pruned row; pass ``add`` as ``perplexity(on_logits=...)``."""

    def __init__(self, reference: DenseReference):
        self.reference = reference
        windows = reference.top1.shape[0]
        self.kl_sum = np.full(windows, np.nan)  # [W] float64 nats
        self.top1_matches = np.zeros(windows, dtype=np.int64)  # [W]

    def add(self, first_window: int, logits: torch.Tensor) -> None:
        """logits: [B, S, V] of windows first_window … first_window + B − 1."""
        for offset in range(logits.shape[0]):
            w = first_window + offset
            dense = torch.from_numpy(np.array(self.reference.log_probs[w])).to(logits.device)  # [S-1, V] float16
            top1 = torch.from_numpy(self.reference.top1[w]).long().to(logits.device)
            kl, same = kl_and_top1(dense, top1, logits[offset, :-1])
            self.kl_sum[w] = float(kl.sum())
            self.top1_matches[w] = int(same.sum())

    def greedy(self, model: torch.nn.Module) -> np.ndarray:
        """[P] tokens each prompt's greedy continuation by ``model`` agrees with dense before diverging."""
        generated = greedy_generate(model, self.reference.prompts, self.reference.continuations.shape[1],
                                    reference=self.reference.continuations)
        return agreement_lengths(self.reference.continuations, generated)


def reference_root() -> Path:
    return cache_root() / "dense_reference"


def greedy_prompts(ids: torch.Tensor, settings: GreedySettings, bos_id: int | None) -> torch.Tensor:
    """The fixed, seeded prompts [P, L] from the test tokens ``ids`` [N]."""
    return calibration_windows(ids, settings.prompts, settings.prompt_tokens, seed=settings.seed, bos_id=bos_id)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer in the state dict (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _tensor_digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def dense_reference(lm: LoadedModel, windows: torch.Tensor, prompts: torch.Tensor, greedy_tokens: int, *,
                    batch_size: int = 1) -> DenseReference:
    """The dense outputs on ``windows`` [W, S] and ``prompts`` [P, L], from the cache or computed now (dense model,
    unpruned). Resumes a build an interrupted run left behind."""
    meta = {"format_version": FORMAT_VERSION, "model": lm.name, "source": lm.source,
            "weights_sha256": weights_digest(lm.model), "windows_sha256": _tensor_digest(windows),
            "windows_shape": list(windows.shape), "prompts_sha256": _tensor_digest(prompts),
            "prompts_shape": list(prompts.shape), "greedy_tokens": greedy_tokens}
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    directory = reference_root() / f"{lm.name}-{key}"
    directory.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(directory.with_name(directory.name + ".lock")):  # another process building it finishes first
        if not (directory / "meta.json").is_file():
            _build(lm, windows, prompts, greedy_tokens, batch_size, directory, meta)
    return _open(directory, prompts)


def _build(lm: LoadedModel, windows: torch.Tensor, prompts: torch.Tensor, greedy_tokens: int, batch_size: int,
           directory: Path, meta: dict) -> None:
    count, seqlen = windows.shape
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    shape = (count, seqlen - 1, vocab)
    staging = directory.with_name(directory.name + ".partial")
    progress_path = staging / "progress.json"
    done = json.loads(progress_path.read_text())["windows_done"] if progress_path.is_file() else 0
    if done == 0:
        need = int(np.prod(shape)) * 2 + count * (seqlen - 1) * 4
        free = shutil.disk_usage(directory.parent).free
        if need + _SPARE_BYTES > free:
            raise NmsimError(f"the dense reference for the KL divergence needs {need / 1e9:.1f} GB under "
                             f"{directory.parent} ({count} windows x {seqlen - 1} positions x {vocab} float16 "
                             f"log-probabilities); {free / 1e9:.1f} GB are free. Free space, set NMSIM_CACHE to a "
                             "larger disk, evaluate fewer tokens (--max-tokens) or pass --no-fidelity")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        log.info("dense reference: %d windows x %d x %d float16 (%.2f GB) into %s", count, seqlen - 1, vocab,
                 need / 1e9, directory)
        mode = "w+"
    else:
        log.info("dense reference: resuming at window %d of %d in %s", done, count, staging)
        mode = "r+"
    try:
        log_probs = np.lib.format.open_memmap(staging / "log_probs.npy", mode=mode, dtype=np.float16, shape=shape)
        top1 = np.lib.format.open_memmap(staging / "top1.npy", mode=mode, dtype=np.int32, shape=shape[:2])
        if mode == "w+":  # the blocks now: a full disk is this error, never a SIGBUS while writing the memory map
            for name in ("log_probs.npy", "top1.npy"):
                _reserve(staging / name)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        shutil.rmtree(staging, ignore_errors=True)
        raise disk_full_error(staging / "log_probs.npy", int(np.prod(shape)) * 2 + int(np.prod(shape[:2])) * 4,
                              "the unfinished dense reference was removed") from None
    if log_probs.shape != shape or top1.shape != shape[:2]:
        raise NmsimError(f"{staging}: an unfinished dense reference of another shape; remove it to start over")
    with torch.inference_mode():
        for start in range(done, count, batch_size):
            batch = windows[start : start + batch_size].to(model_device(lm.model))
            logits = lm.model(batch).logits[:, :-1].float()  # [B, S-1, V]
            end = start + logits.shape[0]
            log_probs[start:end] = torch.log_softmax(logits, dim=-1).cpu().numpy().astype(np.float16)
            top1[start:end] = logits.argmax(dim=-1).cpu().numpy()
            log_probs.flush()
            top1.flush()
            atomic_write_text(progress_path, json.dumps({"windows_done": end}))
    del log_probs, top1
    _save_npy(staging / "greedy.npy", greedy_generate(lm.model, prompts, greedy_tokens).numpy())
    atomic_write_text(staging / "meta.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
    progress_path.unlink()
    if directory.exists():  # a stale, incomplete directory (no meta.json)
        shutil.rmtree(directory)
    os.replace(staging, directory)


def _reserve(path: Path) -> None:
    """Allocate every block of ``path`` (a sparse memory-mapped file) now, where the file system supports it."""
    with open(path, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # not supported here: blocks come as written
                return
            raise
        except AttributeError:  # no posix_fallocate (macOS)
            return


def _open(directory: Path, prompts: torch.Tensor) -> DenseReference:
    try:
        log_probs = np.load(directory / "log_probs.npy", mmap_mode="r")
        top1 = np.load(directory / "top1.npy")
        continuations = torch.from_numpy(np.load(directory / "greedy.npy"))
    except (OSError, ValueError) as exc:
        raise NmsimError(f"{directory}: cannot read the cached dense reference ({exc}); remove the directory to "
                         "compute it again") from None
    return DenseReference(directory, log_probs, top1, prompts, continuations)
