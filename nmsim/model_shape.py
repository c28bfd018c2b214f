"""The shape of a decoder-only transformer: every dimension an inference step's ops need, no weights.

A :class:`ModelShape` fixes the linear GEMMs of every layer (:mod:`nmsim.sim.workload`) and the rest of the op
graph (:mod:`nmsim.sim.inference`): gated or plain MLP, the norm, the activation, rotary or learned positions,
grouped-query heads, sliding-window layers, mixture-of-experts routing. Shapes come from the registry's presets,
a Hugging Face ``config.json`` or a GGUF file (:mod:`nmsim.model_config`).
"""

from __future__ import annotations

from dataclasses import dataclass

from nmsim.errors import NmsimError

# The seven linear projections of a gated decoder layer, in execution order (q, k, v read one input; so do gate, up).
PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")
MLP_KINDS = ("gated", "plain")
ACTIVATIONS = ("silu", "gelu", "relu")
NORMS = ("rmsnorm", "layernorm")
POSITION_KINDS = ("rotary", "learned")

# The largest value nmsim accepts for each dimension: far beyond any real model (the largest published ones have a
# hidden size of ~25k, ~200 layers, 128 heads, head_dim 512, a ~1M vocabulary, 512 experts and a 10M-token context),
# so a value above one is a typo or an attack, refused before it becomes hours of simulation.
DIMENSION_LIMITS = {
    "hidden_size": 2**20, "intermediate_size": 2**22, "num_layers": 10_000, "num_heads": 2**14,
    "num_kv_heads": 2**14, "head_dim": 2**14, "vocab_size": 2**24, "norms_per_layer": 16, "num_experts": 2**14,
    "experts_per_token": 2**14, "shared_expert_intermediate_size": 2**22, "max_positions": 2**28,
    "layer_windows": 2**28,
}
_MINIMUM = {"num_experts": 0, "experts_per_token": 0, "shared_expert_intermediate_size": 0, "max_positions": 0,
            "layer_windows": 0}  # 0 means none / unknown / global; every other dimension is at least 1


@dataclass(frozen=True)
class ModelShape:
    """The dimensions that fix every op of a decoder step of a decoder-only transformer: its linear GEMMs, norms,
    activation, position encoding, attention windows and mixture-of-experts routing. Sizes are element counts."""

    name: str
    hidden_size: int
    intermediate_size: int  # the MLP width; of ONE expert for a mixture of experts
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    source: str
    family: str = ""  # architecture family (llama, gemma, qwen, ...): picks the traced model to borrow masks from
    mlp: str = "gated"  # gated: gate, up, down (Llama/Mistral/Qwen/Gemma); plain: up = W1, down = W2 (GPT-2/GPT-3/OPT)
    activation: str = "silu"  # silu | gelu | relu (gelu_new, gelu_pytorch_tanh, gelu → "gelu")
    norm: str = "rmsnorm"  # rmsnorm | layernorm
    positions: str = "rotary"  # rotary | learned (GPT-2, OPT: a position-embedding table added to the token embedding)
    norms_per_layer: int = 2  # Gemma 2/3: 4 (pre- and post-attention, pre- and post-MLP)
    qk_norm: bool = False  # Gemma 3, Qwen 3: an RMSNorm over each q and k head
    tied_embeddings: bool = False  # the LM head shares the embedding matrix (HF tie_word_embeddings)
    num_experts: int = 0  # mixture of experts: routed experts per layer (0: a dense MLP)
    experts_per_token: int = 0  # MoE top-k
    shared_expert_intermediate_size: int = 0  # Qwen-MoE: an always-on shared expert of this width (0: none)
    layer_windows: tuple[int, ...] = ()  # per layer: sliding-window length in tokens, 0 = global; () = all global
    max_positions: int = 0  # the context the model supports in tokens (max_position_embeddings; 0: unknown)

    def __post_init__(self):
        where = self.label
        for field in DIMENSION_LIMITS:
            values = getattr(self, field)
            for value in (values if field == "layer_windows" else (values,)):
                problem = dimension_problem(value, _MINIMUM.get(field, 1), DIMENSION_LIMITS[field])
                if problem:
                    raise NmsimError(f"{where}: {field}: {value!r}: {problem}")
        if self.num_heads % self.num_kv_heads:
            raise NmsimError(f"{where}: num_kv_heads {self.num_kv_heads} does not divide num_heads {self.num_heads}")
        if self.experts_per_token and not self.num_experts:
            raise NmsimError(f"{where}: experts_per_token {self.experts_per_token} needs num_experts (a mixture of "
                             "experts)")
        for field in ("qk_norm", "tied_embeddings"):
            if not isinstance(getattr(self, field), bool):
                raise NmsimError(f"{where}: {field}: {getattr(self, field)!r}: must be true or false")
        for field, allowed in (("mlp", MLP_KINDS), ("activation", ACTIVATIONS), ("norm", NORMS),
                               ("positions", POSITION_KINDS)):
            if getattr(self, field) not in allowed:
                raise NmsimError(f"model {self.name}: {field} {getattr(self, field)!r}: choose from "
                                 f"{', '.join(allowed)}")
        if self.num_experts and not 1 <= self.experts_per_token <= self.num_experts:
            raise NmsimError(f"model {self.name}: experts_per_token {self.experts_per_token} must be 1 to "
                             f"num_experts {self.num_experts}")
        if self.layer_windows and len(self.layer_windows) != self.num_layers:
            raise NmsimError(f"model {self.name}: layer_windows has {len(self.layer_windows)} entries for "
                             f"{self.num_layers} layers")

    @property
    def label(self) -> str:
        """What errors name: the config.json or GGUF file the shape was read from, else ``model NAME``."""
        return self.source if self.source.endswith((".json", ".gguf")) else f"model {self.name}"

    @property
    def projections(self) -> tuple[str, ...]:
        """A layer's linear projections in execution order (a MoE's gate, up, down are one expert's)."""
        return PROJECTIONS if self.mlp == "gated" else ("q", "k", "v", "o", "up", "down")

    @property
    def is_moe(self) -> bool:
        """Whether each layer's MLP is a mixture of routed experts."""
        return self.num_experts > 0

    def window(self, layer: int) -> int:
        """The sliding-window length of ``layer``'s attention in tokens (0: global attention)."""
        if not 0 <= layer < self.num_layers:
            raise NmsimError(f"model {self.name}: layer {layer} out of range (0 to {self.num_layers - 1})")
        return self.layer_windows[layer] if self.layer_windows else 0

    def projection_shape(self, projection: str) -> tuple[int, int]:
        """(K, N) = (in_features, out_features) of a projection (gate, up, down: one expert's for a MoE)."""
        if projection not in self.projections:
            raise NmsimError(f"model {self.name}: no {projection!r} projection ({self.mlp} MLP; projections: "
                             f"{', '.join(self.projections)})")
        q_width, kv_width = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return {
            "q": (self.hidden_size, q_width),
            "k": (self.hidden_size, kv_width),
            "v": (self.hidden_size, kv_width),
            "o": (q_width, self.hidden_size),
            "gate": (self.hidden_size, self.intermediate_size),
            "up": (self.hidden_size, self.intermediate_size),
            "down": (self.intermediate_size, self.hidden_size),
        }[projection]

    def weight_count(self) -> int:
        """Weight values of the whole model: the embedding (vocab × hidden), a learned position table (max_positions
        × hidden), per layer q, k, v, o, the MLP (× num_experts for a MoE), the router (hidden × num_experts), a
        shared expert (3 × hidden × its width), the norms (norms_per_layer × hidden, + 2 × head_dim with qk_norm),
        the final norm (hidden) and an untied LM head (vocab × hidden). Biases are ignored, as are OPT's two spare
        position rows and Qwen-MoE's shared-expert gate (hidden values a layer)."""
        hidden = self.hidden_size
        per_layer = self.norms_per_layer * hidden + (2 * self.head_dim if self.qk_norm else 0)
        if self.is_moe:
            per_layer += hidden * self.num_experts + 3 * hidden * self.shared_expert_intermediate_size
        embedding = self.vocab_size * hidden
        positions = self.max_positions * hidden if self.positions == "learned" else 0
        head = 0 if self.tied_embeddings else embedding
        return embedding + positions + self.projection_weight_count() + self.num_layers * per_layer + hidden + head

    def projection_weight_count(self) -> int:
        """Weight values of every layer's projections: q, k, v, o and the MLP (× num_experts for a MoE); what a
        weight-sparse design stores compressed."""
        attention = sum(k * n for k, n in map(self.projection_shape, ("q", "k", "v", "o")))
        mlp = sum(k * n for k, n in map(self.projection_shape, self.projections[4:]))
        return self.num_layers * (attention + mlp * (self.num_experts if self.is_moe else 1))


def pattern_windows(num_layers: int, window: int, pattern: int = 0) -> tuple[int, ...]:
    """Per-layer windows (tokens, 0 = global): every layer ``window``, except that with a ``pattern`` p (Gemma's
    sliding_window_pattern) layer i is global when (i + 1) % p == 0; () when no layer has a window."""
    windows = tuple(0 if pattern and (i + 1) % pattern == 0 else window for i in range(num_layers))
    return windows if any(windows) else ()


def dimension_problem(value, minimum: int, limit: int) -> str:
    """What is wrong with a model dimension (an integer, not a bool, from ``minimum`` to ``limit``); "" if nothing.
    Only integers count: 576.0 is refused like 576.5, as JSON and YAML write sizes as integers."""
    if not isinstance(value, int) or isinstance(value, bool):
        return f"must be an integer of at least {minimum}"
    if value < minimum:
        return f"must be at least {minimum}"
    if value > limit:
        return f"above {limit:,}, beyond any real model (nmsim's bound for this dimension)"
    return ""


def is_count(value) -> bool:
    """A positive integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
