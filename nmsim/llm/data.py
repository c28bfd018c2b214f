"""WikiText-2 raw: finding it offline, the standard row protocol, tokens, evaluation and calibration windows.

Search order for the data directory: an explicit ``data_dir``, ``$NMSIM_DATA``, ``../shared/data`` beside the
working directory or beside the nmsim checkout, then the Hugging Face ``wikitext-2-raw-v1`` dataset when the
``datasets`` package is installed and the machine is online. A directory may hold the files directly or in
``wikitext-2-raw/``.

Protocol (as the seed study, Wanda and SparseGPT): every line keeps its trailing newline, a blank line becomes
an empty row, rows are joined with "\\n\\n" and tokenized once.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from nmsim.errors import NmsimError
from nmsim.io import atomic_write_bytes

if TYPE_CHECKING:  # finding and reading the text needs no torch (the pipeline checks finished rows without it)
    import torch

log = logging.getLogger(__name__)

Split = Literal["test", "calibration"]

_FILES = {"test": ("wiki.test.raw",), "calibration": ("wiki.train.raw", "wiki.valid.raw")}
_HF_SPLITS = {"test": "test", "calibration": "validation"}


@dataclass(frozen=True)
class TextSplit:
    name: str  # e.g. wikitext-2-raw/wiki.test.raw
    sha256: str  # of the joined text
    text: str


def _candidate_dirs(data_dir: str | Path | None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    found = []
    if os.environ.get("NMSIM_DATA"):
        found.append(Path(os.environ["NMSIM_DATA"]).expanduser())
    found.append(Path.cwd().parent / "shared" / "data")
    found.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    return found


def _find_file(split: Split, data_dir: str | Path | None) -> Path | None:
    for directory in _candidate_dirs(data_dir):
        for sub in (directory, directory / "wikitext-2-raw"):
            for filename in _FILES[split]:
                if (sub / filename).is_file():
                    return sub / filename
    return None


def rows_to_text(lines: list[str]) -> str:
    """HF-style rows (blank lines -> "") joined with "\\n\\n"."""
    return "\n\n".join(line if line.strip() else "" for line in lines)


def _from_hub(split: Split) -> str | None:
    try:
        from datasets import load_dataset  # optional, only used when online
    except ImportError:
        return None
    try:
        rows = load_dataset("wikitext", "wikitext-2-raw-v1", split=_HF_SPLITS[split])["text"]
    except Exception as exc:  # offline, or the hub refused: fall through to the clear error below
        log.info("Hugging Face wikitext-2-raw-v1 unavailable: %s", exc)
        return None
    return "\n\n".join(rows)


def load_split(split: Split, data_dir: str | Path | None = None) -> TextSplit:
    """Load the WikiText-2 raw test split, or the calibration split (train if present, else validation)."""
    path = _find_file(split, data_dir)
    if path is not None:
        text = rows_to_text(path.read_text(encoding="utf-8").splitlines(keepends=True))
        name = f"{path.parent.name}/{path.name}"
    else:
        text = _from_hub(split) if data_dir is None else None
        if text is None:
            searched = ", ".join(str(d) for d in _candidate_dirs(data_dir))
            raise NmsimError(
                f"WikiText-2 raw {split} split not found (looked for {' or '.join(_FILES[split])} in {searched}). "
                "Pass --data-dir DIR or set NMSIM_DATA to a directory holding wiki.test.raw and wiki.valid.raw "
                "(the files of wikitext-2-raw-v1.zip)."
            )
        name = f"hf:wikitext-2-raw-v1/{_HF_SPLITS[split]}"
    return TextSplit(name, hashlib.sha256(text.encode()).hexdigest(), text)


def tokenize(tokenizer, split: TextSplit, cache_dir: Path | None = None) -> torch.Tensor:
    """Token ids of the whole split, without special tokens: [N] int64. Cached by tokenizer and text."""
    import torch

    vocab_digest = hashlib.sha256(repr(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    key = f"{split.sha256[:16]}-{vocab_digest[:16]}"
    cached = cache_dir / f"{key}.pt" if cache_dir is not None else None
    if cached is not None and cached.exists():
        return torch.load(cached)
    ids = torch.tensor(tokenizer(split.text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    if cached is not None:
        buffer = io.BytesIO()
        torch.save(ids, buffer)
        atomic_write_bytes(cached, buffer.getvalue())
    return ids


def evaluation_windows(
    ids: torch.Tensor, seqlen: int, *, bos_id: int | None = None, max_tokens: int | None = None
) -> torch.Tensor:
    """Non-overlapping windows [W, seqlen] of the token stream.

    With ``bos_id`` every window is BOS followed by seqlen-1 text tokens. ``max_tokens`` keeps the first
    max(1, max_tokens // seqlen) windows. Every window scores seqlen-1 predicted tokens.
    """
    import torch

    if seqlen < 2:
        raise NmsimError(f"seqlen {seqlen}: need at least 2 tokens per window")
    text_per_window = seqlen - 1 if bos_id is not None else seqlen
    count = ids.numel() // text_per_window
    if max_tokens is not None:
        count = min(count, max(1, max_tokens // seqlen))
    if count == 0:
        raise NmsimError(f"the text has {ids.numel()} tokens, fewer than one window of {seqlen}")
    windows = ids[: count * text_per_window].reshape(count, text_per_window)
    if bos_id is not None:
        windows = torch.cat([torch.full((count, 1), bos_id, dtype=ids.dtype), windows], dim=1)
    return windows


def calibration_windows(ids: torch.Tensor, count: int, seqlen: int, *, seed: int, bos_id: int | None = None):
    """``count`` windows [count, seqlen] at random offsets of the calibration stream (seeded, like Wanda)."""
    import torch

    text_per_window = seqlen - 1 if bos_id is not None else seqlen
    if ids.numel() <= text_per_window:
        raise NmsimError(f"calibration text has {ids.numel()} tokens, fewer than one window of {seqlen}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - text_per_window, (count,), generator=generator)
    windows = torch.stack([ids[s : s + text_per_window] for s in starts.tolist()])
    if bos_id is not None:
        windows = torch.cat([torch.full((count, 1), bos_id, dtype=ids.dtype), windows], dim=1)
    return windows
