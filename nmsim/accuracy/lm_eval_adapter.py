"""lm-evaluation-harness adapter: lm_eval's ``HFLM`` on a model that nmsim loaded and pruned, registered as "nmsim".

lm_eval (optional: ``pip install "lm_eval==0.4.13"``) finds models only in its own registry and loads no plugins,
so ``lm_eval --model nmsim`` alone does not know this class. ``nmsim lm-eval ARGS…`` imports it (which registers
it) and then runs lm_eval's own command line with ARGS::

    nmsim lm-eval --model nmsim --model_args pretrained=smollm2-135m,pattern=8:16,criterion=amber,mitigation=variance \\
                  --tasks my_task --include_path my_tasks/

In Python, import this module and pass ``model="nmsim"`` (or an :class:`NmsimLM`) to ``lm_eval.simple_evaluate``.
The pruning (:func:`nmsim.accuracy.study.pruned`, as ``nmsim eval`` sets it up) stays on for the adapter's
lifetime; :meth:`NmsimLM.close` restores the model's own layers and weights.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import types
import typing
from contextlib import ExitStack
from dataclasses import dataclass

import torch

from nmsim.accuracy.study import Method, StudySettings, needs_input_stats, pruned, row_labels
from nmsim.errors import NmsimError
from nmsim.llm.device import dtype_name, parse_dtype
from nmsim.llm.models import load_model
from nmsim.patterns import Pattern, parse_pattern
from nmsim.registry import DEFAULT_MODEL
from nmsim.sparsify.criteria import get_criterion
from nmsim.sparsify.input_stats import load_or_calibrate
from nmsim.sparsify.learnable import LearnRecipe
from nmsim.sparsify.linear import SparsityConfig
from nmsim.sparsify.mitigations import parse_mitigation
from nmsim.sparsify.targets import make_targets
from nmsim.sparsify.weight_pruning import WeightPruningConfig

try:
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM
except ImportError as exc:
    raise NmsimError(f"the lm-evaluation-harness adapter needs lm_eval ({exc}); install it with: "
                     "pip install 'lm_eval==0.4.13' (or pip install -e '.[lm-eval]')") from None

log = logging.getLogger(__name__)

# HFLM's own arguments that pass through unchanged.
HFLM_ARGS = ("max_length", "add_bos_token", "prefix_token_id", "logits_cache", "truncation", "softmax_dtype")


@dataclass(frozen=True)
class AdapterArgs:
    """The model_args of ``--model nmsim``; defaults as ``nmsim eval``, except the pattern (dense)."""

    pretrained: str = DEFAULT_MODEL  # embedded alias, .gguf file, HF model directory or (online) hub id
    pattern: str = "dense"  # any spelling nmsim.patterns.parse_pattern accepts
    operand: str = "activation"  # activation | weight
    criterion: str = "magnitude"  # activation: a registered criterion; weight: magnitude | wanda
    mitigation: str = "none"  # activation only
    targets: str = "all"  # preset, or projections joined by '+' (a comma would end the model_arg): o+down
    prefill_only: bool = False  # decode tokens (generate_until) stay dense
    data_dir: str | None = None  # WikiText-2 for calibration (default: $NMSIM_DATA, then ../shared/data)
    calibration_windows: int = 16  # for criteria and mitigations that read input statistics, and wanda
    calibration_seed: int = 42
    calibration_seqlen: int = 512  # tokens per calibration (and learnable training) window
    learn_windows: int = 64  # learnable mitigations: the training recipe
    learn_steps: int | None = None
    learn_lr: float = 1e-4
    dtype: str = "float32"  # float32 (lm_eval's auto) | bfloat16 | float16
    device: str | None = None  # default: where nmsim loads the model (cpu)
    batch_size: int | str = 1
    max_batch_size: int = 64

    @classmethod
    def allowed(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)] + list(HFLM_ARGS)

    @classmethod
    def parse(cls, model_args: dict) -> tuple[AdapterArgs, dict]:
        """(these arguments, HFLM's pass-through ones) from lm_eval's parsed model_args; None means the default."""
        unknown = sorted(set(model_args) - set(cls.allowed()))
        if unknown:
            raise NmsimError(f"--model nmsim: unknown model_args {', '.join(unknown)}; allowed: "
                             f"{', '.join(cls.allowed())}")
        hints = typing.get_type_hints(cls)
        ours = {name: _coerce(name, value, hints[name]) for name, value in model_args.items()
                if name not in HFLM_ARGS and value is not None}
        return cls(**ours), {name: model_args[name] for name in HFLM_ARGS if name in model_args}


def _coerce(name: str, value, hint):
    """lm_eval's model_args parser has guessed a type (8 -> int, true -> bool); make it the field's type."""
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if isinstance(value, tuple(k for k in kinds if k is not type(None))) and not (
            isinstance(value, bool) and bool not in kinds):
        return value
    text = str(value).strip()
    if bool in kinds and text.lower() in ("true", "false", "1", "0"):
        return text.lower() in ("true", "1")
    if int in kinds and text.lstrip("-").isdigit():
        return int(text)
    if float in kinds:
        try:
            return float(text)
        except ValueError:
            pass
    if str in kinds:
        return text
    allowed = " or ".join(k.__name__ for k in kinds if k is not type(None))
    raise NmsimError(f"--model nmsim: model_arg {name}={value!r} must be {allowed}")


def _device(device: str | None) -> str:
    """The ``--device`` nmsim loads the model on (:mod:`nmsim.llm.device`); lm_eval's command line asks for cuda:0
    by default, so, as its HFLM does, a CUDA device on a machine without one means the cpu (with a warning)."""
    if device is None:
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("no CUDA device here: evaluating on the cpu (lm_eval asked for %s)", device)
        return "cpu"
    return device


def method_config(args: AdapterArgs) -> Method:
    """The pruning method the arguments describe (dense whatever the operand when the pattern is dense)."""
    pattern = parse_pattern(args.pattern)
    targets = make_targets(args.targets.replace("+", ","), phase="prefill" if args.prefill_only else "all")
    if args.operand == "activation":
        return SparsityConfig(pattern, args.criterion, parse_mitigation(args.mitigation), targets)
    if args.operand != "weight":
        raise NmsimError(f"--model nmsim: operand {args.operand!r}; choose activation or weight")
    if args.mitigation != "none" or args.prefill_only:
        raise NmsimError("--model nmsim: mitigation and prefill_only apply to activation pruning only "
                         "(operand=activation)")
    if pattern.kind == "dense":
        return SparsityConfig(Pattern.dense())
    return WeightPruningConfig(pattern, args.criterion, targets)


@register_model("nmsim")
class NmsimLM(HFLM):
    """lm_eval's HFLM on ``load_model(pretrained)``, pruned as the model_args say until :meth:`close`."""

    def __init__(self, **model_args) -> None:
        args, hflm_args = AdapterArgs.parse(model_args)
        dtype = parse_dtype("float32" if args.dtype == "auto" else args.dtype)  # lm_eval's "auto": nmsim's default
        self.method = method_config(args)
        settings = StudySettings(model=args.pretrained, data_dir=args.data_dir, seqlen=args.calibration_seqlen,
                                 calibration_windows=args.calibration_windows, calibration_seed=args.calibration_seed,
                                 learn_recipe=LearnRecipe(windows=args.learn_windows, seqlen=args.calibration_seqlen,
                                                          steps=args.learn_steps, lr=args.learn_lr),
                                 device=_device(args.device), dtype=dtype_name(dtype))
        lm = load_model(args.pretrained, dtype=dtype, device=settings.device)
        stats = None
        if needs_input_stats(self.method):  # measured on the dense model, on its device
            stats = load_or_calibrate(lm, args.data_dir, args.calibration_seqlen, args.calibration_windows,
                                      args.calibration_seed)
        if isinstance(self.method, SparsityConfig) and get_criterion(self.method.criterion).looks_across_tokens:
            log.warning("criterion %s scores each token against the other tokens of its forward call: results "
                        "depend on lm_eval's batches and padding (batch_size=1 is closest to nmsim eval)",
                        self.method.criterion)
        if lm.bos_per_window:  # Gemma: BOS at every sequence start, as nmsim evaluates it
            hflm_args.setdefault("add_bos_token", True)
        hflm_log = logging.getLogger(HFLM.__module__)
        level = hflm_log.level
        hflm_log.setLevel(logging.ERROR)  # its warnings that a built model ignores loading options: by design here
        try:
            super().__init__(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=args.batch_size,
                             max_batch_size=args.max_batch_size, **hflm_args)
        finally:
            hflm_log.setLevel(level)
        self.loaded = lm
        self._pruning = ExitStack()
        self._pruning.enter_context(pruned(lm, self.method, settings, stats))
        labels = row_labels(self.method)
        log.info("lm_eval model nmsim: %s, %s", lm.name, ", ".join(f"{k} {v}" for k, v in labels.items()))

    def close(self) -> None:
        """Restore the model's own layers and weights (the adapter evaluates the unpruned model afterwards)."""
        self._pruning.close()

    def __enter__(self) -> typing.Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_model_info(self) -> dict:
        """What lm_eval records about the model: nmsim's name, source and pruning method (no Hub lookup)."""
        return {
            "model_num_parameters": sum(p.numel() for p in self.model.parameters()),
            "model_dtype": str(next(self.model.parameters()).dtype),
            "nmsim_model": self.loaded.name,
            "nmsim_source": self.loaded.source,
            **{f"nmsim_{key}": value for key, value in row_labels(self.method).items()},
        }


def run_lm_eval(argv: list[str]) -> int:
    """lm_eval's command line (``lm-eval [run|ls|validate] …``) with the model "nmsim" registered."""
    from lm_eval.__main__ import cli_evaluate

    saved, sys.argv = sys.argv, ["lm-eval", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0
