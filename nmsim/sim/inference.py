"""End-to-end inference: every op of a decoder step, time to first token, time per output token, memory.

One step is the op graph of the model (:func:`layer_nodes`, :func:`edge_nodes`), per layer in execution order:

    attn_norm (+ residual add)   [qk_norm]   q k v   [rotary]   kv_write   attention   o   [all-reduce]
    [post_attn_norm]   mlp_norm (+ residual add)   gate up | router dispatch experts combine [shared]   act   down
    [all-reduce]   [post_mlp_norm]

before the layers the embedding lookup (plus the learned position table), after them the final norm (+ residual
add) and the LM head on the last position of each sequence (dense unless pruned; its logits gathered under tensor
parallelism). Linear GEMMs are simulated (:mod:`nmsim.sim.simulate`); everything else is a closed-form kernel
(:mod:`nmsim.sim.kernels`) on the design's vector unit, tensor cores and memory. Attention stays dense on every
design: the end-to-end speedup of a pattern is diluted by exactly the work N:M does not touch.

Attention is fused by default (FlashAttention-style: Q, K, V read once, the scores never leave the chip, causal and
sliding-window pairs only), or unfused (``attention="unfused"``: QKᵀ, softmax and AV as three kernels over the full
query × key rectangle, masked after, the score matrix through memory). A decode step at context C attends to C
keys (its own included): it reads B × C × 2 × kv_heads × head_dim KV values per layer (min(C, window) on
sliding-window layers) and writes its own. The part of an attention kernel's time spent on KV bytes, when the
kernel is memory-bound, is charged to the ``kv_cache`` class.

On an activation-sparse design running a layer sparse, the N:M selector sits at the output of the kernel producing
that layer's input (a norm, the activation, attention): it writes the compressed tensor (kept values and metadata)
instead of the dense one; those bytes are the selector's own traffic (``selector_bytes``); its compare work is
timed in the GEMM pipeline.

Op classes: ``sparse_linear`` (a linear GEMM running N:M), ``dense_linear``, ``attention``, ``kv_cache``,
``vector`` (norms, rotary, activation, residual adds, embedding, MoE dispatch) and ``communication``.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field, replace

from nmsim.errors import NmsimError
from nmsim.hw.energy import kernel_energy_pJ
from nmsim.hw.spec import AcceleratorSpec
from nmsim.patterns import Pattern, compressed_row_bytes
from nmsim.registry import ModelShape
from nmsim.sim.kernels import (SOFTMAX_FLOPS, KernelWork, allgather_cycles, allreduce_cycles, kernel_time, norm_work,
                               require_vector_unit, softmax_work)
from nmsim.sim.simulate import GemmRow, ModelRun, simulate_gemm, simulate_model
from nmsim.sim.simulate import clear_cache as clear_gemm_cache
from nmsim.sim.timing import Timing, load_timing
from nmsim.sim.usage import DENSE_USE, layer_use
from nmsim.sim.workload import Gemm, check_divides
from nmsim.traces.reader import TraceData

log = logging.getLogger(__name__)

OP_CLASSES = ("sparse_linear", "dense_linear", "attention", "kv_cache", "vector", "communication")
ATTENTION_KINDS = ("fused", "unfused")
ACTIVATION_WORK = {"silu": (5, 1), "gelu": (8, 1), "relu": (1, 0)}  # (FLOPs, special functions) per element;
# gated MLPs add the multiply by up; silu: negate, exp, add, divide, multiply; gelu (tanh form): 7 FLOPs and a tanh
ROTARY_FLOPS = 3  # per element: x·cos + rotate(x)·sin
DEFAULT_GENERATE = 128  # decode steps averaged for the time per output token


@dataclass(frozen=True)
class OpTime:
    """One op of one step (one device's share), on the design, the same design dense and the baseline design."""

    layer: int  # -1: before the decoder layers (embedding); num_layers: after them (final norm, LM head)
    name: str
    op_class: str
    time_us: float
    dense_time_us: float  # the same op with every layer dense on the same design
    baseline_time_us: float  # on the baseline design, dense
    kv_time_us: float = 0.0  # of time_us, spent moving the KV cache (charged to kv_cache)
    flops: float = 0.0
    bytes: float = 0.0  # through the outermost memory level
    kv_bytes: float = 0.0
    selector_bytes: float = 0.0  # compressed activations written by the N:M selector
    activation_bytes: float = 0.0  # the op's input and output activations (capacity check)
    count: float = 1.0  # identical instances in this op (MoE experts)


@dataclass(frozen=True)
class Step:
    """One forward step: prefill of ``batch`` × ``tokens_per_sequence`` or one decode step at ``context``."""

    phase: str
    batch: int
    tokens_per_sequence: int
    context: float  # keys attended by the last query (decode: the mean over the steps averaged)
    entries: tuple[tuple[int, OpTime], ...]  # (layer, op): alike layers share their non-GEMM ops' objects

    @functools.cached_property
    def ops(self) -> tuple[OpTime, ...]:
        """Every op with its layer."""
        return tuple(op if op.layer == layer else replace(op, layer=layer) for layer, op in self.entries)

    def total(self, name: str) -> float:
        """The sum of one :class:`OpTime` field over the step."""
        return sum(getattr(op, name) for _, op in self.entries)

    @property
    def time_us(self) -> float:
        return self.total("time_us")

    @property
    def dense_time_us(self) -> float:
        return self.total("dense_time_us")

    @property
    def baseline_time_us(self) -> float:
        return self.total("baseline_time_us")

    def by_class(self) -> dict[str, float]:
        """µs per op class (KV-bound attention time under ``kv_cache``)."""
        out = dict.fromkeys(OP_CLASSES, 0.0)
        for _, op in self.entries:
            out[op.op_class] += op.time_us - op.kv_time_us
            out["kv_cache"] += op.kv_time_us
        return out

    def linear_time_us(self, which: str = "time_us") -> float:
        """The decoder layers' linear GEMMs (the LM head excluded): what a linear-only model times."""
        return sum(getattr(op, which) for _, op in self.entries if _decoder_linear(op))


def _decoder_linear(op: OpTime) -> bool:
    """A linear GEMM of a decoder layer (not the LM head): what the linear-only speedup counts."""
    return op.op_class.endswith("_linear") and op.name != "lm_head"


@dataclass(frozen=True)
class MemoryUse:
    """Bytes one device holds: weights, the KV cache at the longest context, the largest op's activations."""

    weights: float
    kv_cache: float
    activations: float
    capacity: float

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache + self.activations

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity


@dataclass(frozen=True)
class InferenceRun:
    """Prefill (time to first token) and decode (time per output token) of one design running one pattern."""

    spec: AcceleratorSpec
    baseline: AcceleratorSpec
    shape: ModelShape
    pattern: Pattern
    batch: int
    prompt: int  # prompt tokens per sequence (prefill) = the context decode starts from
    generate: int  # decode steps averaged
    devices: int
    attention: str
    prefill: Step | None  # None when only decode was asked for
    decode: Step | None
    linear: dict[str, ModelRun] = field(repr=False)  # phase → the linear GEMMs
    memory: MemoryUse
    statistics: str

    def step(self, phase: str) -> Step:
        return self.prefill if phase == "prefill" else self.decode

    def phase_summary(self, phase: str) -> dict[str, float]:
        """One phase: its step time, tokens/s, µs per op class, speedups end to end and of the linear layers alone,
        the linear layers' share, and the bytes moved."""
        step = self.step(phase)
        tokens = self.batch * (self.prompt if phase == "prefill" else 1)
        sums = dict.fromkeys(("time", "dense", "baseline", "bytes", "kv", "selector", "linear", "linear_dense",
                              "tensor_flops", "vector_flops", "kernel_bytes"), 0.0)
        classes = dict.fromkeys(OP_CLASSES, 0.0)
        for _, op in step.entries:  # one pass: a sweep asks this of every case
            sums["time"] += op.time_us
            sums["dense"] += op.dense_time_us
            sums["baseline"] += op.baseline_time_us
            sums["bytes"] += op.bytes
            sums["kv"] += op.kv_bytes
            sums["selector"] += op.selector_bytes
            classes[op.op_class] += op.time_us - op.kv_time_us
            classes["kv_cache"] += op.kv_time_us
            if _decoder_linear(op):
                sums["linear"] += op.time_us
                sums["linear_dense"] += op.dense_time_us
            else:  # its energy from its FLOPs and bytes (the decoder GEMMs': simulated, below)
                sums["tensor_flops" if op.op_class == "attention" else "vector_flops"] += op.flops
                sums["kernel_bytes"] += op.bytes
        out = {"e2e_time_us": sums["time"], "tokens_per_s": tokens / (sums["time"] * 1e-6)}
        out.update({f"{name}_us": value for name, value in classes.items()})
        out["e2e_speedup_vs_dense_same_design"] = sums["dense"] / sums["time"]
        out["linear_speedup_vs_dense_same_design"] = sums["linear_dense"] / sums["linear"]
        out["e2e_speedup_vs_baseline"] = sums["baseline"] / sums["time"]
        out["linear_share"] = sums["linear"] / sums["time"]
        out["e2e_offchip_bytes"] = sums["bytes"]
        out["kv_bytes"] = sums["kv"]
        out["selector_bytes"] = sums["selector"]
        # energy of the step on every device: the decoder GEMMs as simulated, the other ops from their work
        linear_pJ = sum(row.gemm.count * row.sparse.energy.total_pJ for row in self.linear[phase].rows)
        other_pJ = kernel_energy_pJ(self.spec, sums["tensor_flops"], sums["vector_flops"], sums["kernel_bytes"])
        out["e2e_energy_uJ"] = (linear_pJ + other_pJ) * self.devices / 1e6
        out["energy_per_token_mJ"] = out["e2e_energy_uJ"] / tokens / 1e3
        return out

    def memory_summary(self) -> dict[str, float | bool]:
        return {"weights_GB": self.memory.weights / 1e9, "kv_cache_GB": self.memory.kv_cache / 1e9,
                "activations_GB": self.memory.activations / 1e9, "memory_used_GB": self.memory.total / 1e9,
                "memory_capacity_GB": self.memory.capacity / 1e9, "fits_memory": self.memory.fits}

    def summary(self) -> dict[str, float | str | bool]:
        """TTFT, TPOT, tokens/s, the op-class breakdown per phase, memory, and end-to-end vs linear-only speedups."""
        out: dict[str, float | str | bool] = {
            "design": self.spec.name, "pattern": str(self.pattern), "model": self.shape.name, "batch": self.batch,
            "prompt_tokens": self.prompt, "generate_tokens": self.generate, "devices": self.devices,
            "attention": self.attention, "statistics": self.statistics}
        if self.prefill is not None:
            out["ttft_ms"] = self.prefill.time_us / 1e3
        if self.decode is not None:
            out["tpot_ms"] = self.decode.time_us / 1e3
        for phase in ("prefill", "decode"):
            if self.step(phase) is not None:
                out.update({f"{phase}_{name}": value for name, value in self.phase_summary(phase).items()})
        out.update(self.memory_summary())
        return out


# --- the op graph -------------------------------------------------------------------------------------------------
def _visible_pairs(first: int, last: int, window: int) -> int:
    """Σ over query positions p = first … last (0-based) of the keys it attends, min(p + 1, window) (0: no window)."""
    def up_to(p: int) -> int:  # Σ_{q=0}^{p} min(q + 1, window)
        if p < 0:
            return 0
        if not window or p + 1 <= window:
            return (p + 1) * (p + 2) // 2
        return window * (window + 1) // 2 + (p + 1 - window) * window
    return up_to(last) - up_to(first - 1)


@dataclass(frozen=True)
class _Ctx:
    """What every op of a step needs."""

    shape: ModelShape
    batch: int
    queries: int  # new tokens per sequence this step
    context: int  # keys the last query attends (prefill: the prompt)
    devices: int
    value_bytes: float
    kv_bytes: float
    attention: str
    single_pass_max: int
    block_queries: int

    @property
    def tokens(self) -> int:
        return self.batch * self.queries


def attention_works(ctx: _Ctx, window: int, out_bytes_per_token: float) -> list[tuple[str, KernelWork, float]]:
    """(name, work, KV bytes of it) of one layer's attention on one device; ``out_bytes_per_token``: what the
    output write costs per token (dense, or compressed when o runs sparse)."""
    s = ctx.shape
    heads, kv_heads, d = s.num_heads // ctx.devices, s.num_kv_heads // ctx.devices, s.head_dim
    b, q, c = ctx.batch, ctx.queries, ctx.context
    q_bytes = b * q * heads * d * ctx.value_bytes
    out_bytes = b * q * out_bytes_per_token
    if ctx.attention == "fused":
        pairs = b * heads * _visible_pairs(c - q, c - 1, window)
        keys = min(c, window) if window and q == 1 else c  # distinct keys read per sequence and KV head
        kv = b * kv_heads * 2 * d * keys * ctx.kv_bytes
        blocks = b * heads * math.ceil(q / ctx.block_queries) if q > 1 else 0  # decode splits the keys instead
        work = KernelWork(tensor_flops=4 * d * pairs, vector_flops=SOFTMAX_FLOPS * pairs, special_ops=pairs,
                          bytes_read=q_bytes + kv, bytes_written=out_bytes, blocks=blocks, serial_vector=True)
        return [("attention", work, kv)]
    rect = b * heads * q * c  # unfused: the full rectangle, masked after
    k_bytes = b * heads * c * d * ctx.kv_bytes  # K (and V) repeated to every query head
    scores = KernelWork(tensor_flops=2 * d * rect, bytes_read=q_bytes + k_bytes, bytes_written=rect * ctx.value_bytes)
    softmax = softmax_work(b * heads * q, c, ctx.value_bytes, ctx.single_pass_max)
    softmax = replace(softmax, vector_flops=softmax.vector_flops + rect)  # the causal/window mask
    weighted = KernelWork(tensor_flops=2 * d * rect, bytes_read=rect * ctx.value_bytes + k_bytes,
                          bytes_written=out_bytes)
    return [("attn_scores", scores, k_bytes), ("attn_softmax", softmax, 0.0), ("attn_av", weighted, k_bytes)]


def activation_work(elements: float, activation: str, gated: bool, value_bytes: float) -> KernelWork:
    """The MLP's activation over ``elements`` values (read once, written once); a gated MLP also reads up and
    multiplies by it."""
    flops, special = ACTIVATION_WORK[activation]
    return KernelWork(vector_flops=(flops + gated) * elements, special_ops=special * elements,
                      bytes_read=(1 + gated) * elements * value_bytes, bytes_written=elements * value_bytes)


@dataclass(frozen=True)
class _Node:
    """One op before timing: a kernel, an all-reduce or all-gather, or a linear GEMM's place (op class
    ``linear``); its layer is the step entry's."""

    name: str
    op_class: str
    work: KernelWork | None = None
    dense_work: KernelWork | None = None  # the kernel when every layer runs dense (uncompressed outputs)
    kv_bytes: float = 0.0
    selector_bytes: float = 0.0
    activation_bytes: float = 0.0
    message_bytes: float = 0.0  # all-reduce / all-gather per device
    gather: bool = False
    attention: tuple = ()  # (window, output bytes per token or None, dense bytes per token, kernel index)


def _writes_compressed(row: GemmRow | None, spec: AcceleratorSpec, k: int, value_bits: int) -> float | None:
    """Bytes per token of a sparse activation input of width ``k`` stored compressed, else None."""
    if row is None or not row.use.sparse or row.use.operand != "activation":
        return None
    return compressed_row_bytes(k, row.use.pattern, value_bits, spec.sparsity.metadata_format)


CONSUMERS = ("q", "o", "mlp", "down", "shared_down")  # the sparse inputs a layer's kernels may write compressed


def layer_consumers(ctx: _Ctx, spec: AcceleratorSpec, rows: dict[tuple[int, str], GemmRow],
                    layer: int) -> tuple[float | None, ...]:
    """Per :data:`CONSUMERS`: the bytes per token its producer writes when the consuming GEMM runs sparse on an
    activation-sparse design (compressed), else None."""
    s, bits = ctx.shape, spec.compute.value_bits
    widths = {"q": s.hidden_size, "o": s.num_heads // ctx.devices * s.head_dim, "mlp": s.hidden_size,
              "down": s.intermediate_size // ctx.devices,
              "shared_down": s.shared_expert_intermediate_size // ctx.devices}
    projections = {"mlp": "gate" if s.mlp == "gated" else "up"}
    return tuple(_writes_compressed(rows.get((layer, projections.get(name, name))), spec, widths[name], bits)
                 for name in CONSUMERS)


def layer_nodes(ctx: _Ctx, first: bool, window: int, compressed: tuple[float | None, ...]) -> list[_Node]:
    """The ops of one decoder layer on one device, in execution order (``first``: layer 0, whose norm adds no
    residual; ``window``: its attention window, 0 global); linear GEMMs are placeholders (op class ``linear``,
    timed per layer). ``compressed``: :func:`layer_consumers`."""
    s, vb, t = ctx.shape, ctx.value_bytes, ctx.tokens
    hidden, heads, kv_heads = s.hidden_size, s.num_heads // ctx.devices, s.num_kv_heads // ctx.devices
    d = s.head_dim
    into = dict(zip(CONSUMERS, compressed))
    nodes: list[_Node] = []

    def kernel(name: str, work: KernelWork, op_class: str = "vector", *, consumer: str = "", width: int = 0,
               kv: float = 0.0, rows: float = t) -> None:
        """Add a kernel; its output of ``width`` per token (``rows`` tokens) is written compressed when
        ``consumer`` runs sparse."""
        dense, selector = work, 0.0
        per_token = into.get(consumer)
        if per_token is not None:
            selector = rows * per_token
            work = replace(work, bytes_written=work.bytes_written - rows * width * vb + selector)
        nodes.append(_Node(name, op_class, work, dense, kv_bytes=kv, selector_bytes=selector,
                           activation_bytes=work.bytes_total - kv))

    def linear(*projections: str) -> None:
        nodes.extend(_Node(projection, "linear") for projection in projections)

    def allreduce(name: str) -> None:
        if ctx.devices > 1:
            nodes.append(_Node(name, "communication", message_bytes=t * hidden * vb))

    kernel("attn_norm", norm_work(t, hidden, vb, s.norm, residual=not first), consumer="q", width=hidden)
    if s.qk_norm:
        kernel("qk_norm", norm_work(t * (heads + kv_heads), d, vb, "rmsnorm"))
    linear("q", "k", "v")
    if s.positions == "rotary":
        elements = t * (heads + kv_heads) * d
        kernel("rotary", KernelWork(vector_flops=ROTARY_FLOPS * elements, bytes_read=(elements + 2 * t * d) * vb,
                                    bytes_written=elements * vb))
    new_kv = t * kv_heads * 2 * d
    kernel("kv_write", KernelWork(bytes_read=new_kv * vb, bytes_written=new_kv * ctx.kv_bytes), "kv_cache",
           kv=new_kv * ctx.kv_bytes)
    o_width, out_per_token = heads * d, into["o"]
    attention = attention_works(ctx, window, out_per_token if out_per_token is not None else o_width * vb)
    dense_attention = attention_works(ctx, window, o_width * vb) if out_per_token is not None else attention
    for index, ((name, work, kv), (_, dense, _)) in enumerate(zip(attention, dense_attention)):
        selector = t * out_per_token if out_per_token is not None and name in ("attention", "attn_av") else 0.0
        nodes.append(_Node(name, "attention", work, dense, kv_bytes=kv, selector_bytes=selector,
                           activation_bytes=work.bytes_total - kv,
                           attention=(window, out_per_token, o_width * vb, index)))
    linear("o")
    allreduce("attn_allreduce")
    if s.norms_per_layer >= 4:
        kernel("post_attn_norm", norm_work(t, hidden, vb, s.norm))
    kernel("mlp_norm", norm_work(t, hidden, vb, s.norm, residual=True), consumer="mlp", width=hidden)
    routed = t
    if s.is_moe:
        linear("router")
        routed = t * s.experts_per_token
        kernel("moe_dispatch", KernelWork(bytes_read=t * hidden * vb, bytes_written=routed * hidden * vb))
    linear(*s.projections[4:-1])  # gate, up (or up alone)
    width = s.intermediate_size // ctx.devices
    kernel("act", activation_work(routed * width, s.activation, s.mlp == "gated", vb),  # every routed token
           consumer="down", width=width, rows=routed)
    linear("down")
    if s.is_moe:
        kernel("moe_combine", KernelWork(vector_flops=2 * routed * hidden, bytes_read=routed * hidden * vb,
                                         bytes_written=t * hidden * vb))
        if s.shared_expert_intermediate_size:
            shared = s.shared_expert_intermediate_size // ctx.devices
            linear("shared_gate", "shared_up")
            kernel("shared_act", activation_work(t * shared, s.activation, True, vb), consumer="shared_down",
                   width=shared)
            linear("shared_down")
    allreduce("mlp_allreduce")
    if s.norms_per_layer >= 4:
        kernel("post_mlp_norm", norm_work(t, hidden, vb, s.norm))
    return nodes


def edge_nodes(ctx: _Ctx) -> tuple[list[_Node], list[_Node]]:
    """The ops before the decoder layers (embedding lookup, its all-reduce under tensor parallelism) and after them
    (final norm with the last residual add, the LM head as a placeholder, the logits' all-gather)."""
    s, vb, t = ctx.shape, ctx.value_bytes, ctx.tokens
    hidden = s.hidden_size
    positions = 2 if s.positions == "learned" else 1  # the token row, and the position row added to it
    embedding = KernelWork(vector_flops=(positions - 1) * t * hidden, bytes_read=positions * t * hidden * vb,
                           bytes_written=t * hidden * vb)
    before = [_Node("embedding", "vector", embedding, embedding, activation_bytes=embedding.bytes_total)]
    final = norm_work(t, hidden, vb, s.norm, residual=True)
    after = [_Node("final_norm", "vector", final, final, activation_bytes=final.bytes_total),
             _Node("lm_head", "linear")]
    if ctx.devices > 1:
        before.append(_Node("embedding_allreduce", "communication", message_bytes=t * hidden * vb))
        vocab = math.ceil(s.vocab_size / ctx.devices)
        after.append(_Node("logits_allgather", "communication", message_bytes=ctx.batch * vocab * vb, gather=True))
    return before, after


def _comm_us(node: _Node, devices: int, spec: AcceleratorSpec) -> float:
    cycles = (allgather_cycles if node.gather else allreduce_cycles)(node.message_bytes, devices, spec)
    return cycles / spec.clock_GHz / 1e3


def _time_node(node: _Node, spec: AcceleratorSpec, baseline: AcceleratorSpec, devices: int) -> OpTime:
    """A kernel's or a communication's times on the design, the design dense and the baseline."""
    if node.work is None:  # communication
        time = _comm_us(node, devices, spec)
        base = _comm_us(node, devices, baseline) if devices > 1 else 0.0
        return OpTime(0, node.name, node.op_class, time, time, base)  # layer: the step entry's
    time, kv_time = _kernel_times(node.work, node.kv_bytes, node.op_class, spec)
    dense = _kernel_times(node.dense_work, 0.0, "", spec)[0] if node.dense_work is not node.work else time
    base = _kernel_times(node.dense_work or node.work, 0.0, "", baseline)[0]
    work = node.work
    return OpTime(0, node.name, node.op_class, time, dense, base, kv_time,
                  flops=work.tensor_flops + work.vector_flops, bytes=work.bytes_total, kv_bytes=node.kv_bytes,
                  selector_bytes=node.selector_bytes, activation_bytes=node.activation_bytes)


@functools.lru_cache(maxsize=1 << 16)
def _kernel_times(work: KernelWork, kv_bytes: float, op_class: str, spec: AcceleratorSpec) -> tuple[float, float]:
    """(µs, of which charged to the KV cache) of one kernel: a memory-bound kernel's time beyond its fixed cost,
    in the share of its bytes that are KV (none for the kv_cache op itself, which is all KV)."""
    timed = kernel_time(work, spec)
    time = timed.cycles / spec.clock_GHz / 1e3
    if not kv_bytes or timed.bound != "memory" or op_class == "kv_cache":
        return time, 0.0
    return time, (timed.cycles - timed.fixed_cycles) / spec.clock_GHz / 1e3 * kv_bytes / work.bytes_total


@functools.lru_cache(maxsize=1 << 14)
def _attention_mean(ctx: _Ctx, attention: tuple, first: int, steps: int, spec: AcceleratorSpec,
                    baseline: AcceleratorSpec) -> dict[str, float]:
    """The mean over decode contexts first … first + steps − 1 of one attention kernel's numbers."""
    window, out_per_token, dense_per_token, index = attention
    fields = dict.fromkeys(("time_us", "dense_time_us", "baseline_time_us", "kv_time_us", "flops", "bytes",
                            "kv_bytes", "selector_bytes"), 0.0)
    largest = 0.0
    for context in range(first, first + steps):
        at = replace(ctx, context=context)
        name, work, kv = attention_works(at, window, dense_per_token if out_per_token is None else out_per_token)[index]
        dense = attention_works(at, window, dense_per_token)[index][1] if out_per_token is not None else work
        time, kv_time = _kernel_times(work, kv, "attention", spec)
        fields["time_us"] += time
        fields["kv_time_us"] += kv_time
        fields["dense_time_us"] += _kernel_times(dense, 0.0, "", spec)[0] if dense is not work else time
        fields["baseline_time_us"] += _kernel_times(dense, 0.0, "", baseline)[0]
        fields["flops"] += work.tensor_flops + work.vector_flops
        fields["bytes"] += work.bytes_total
        fields["kv_bytes"] += kv
        largest = max(largest, work.bytes_total - kv)
        if out_per_token is not None and name in ("attention", "attn_av"):
            fields["selector_bytes"] += ctx.tokens * out_per_token
    means = {name: value / steps for name, value in fields.items()}
    means["activation_bytes"] = largest
    return means


def clear_cache() -> None:
    """Forget every cached simulation: the GEMMs (:func:`nmsim.sim.simulate.clear_cache`), the kernel and
    attention times and the layer plans (benchmarks time cold runs)."""
    clear_gemm_cache()
    _kernel_times.cache_clear()
    _attention_mean.cache_clear()
    _plan.cache_clear()


def _lm_head_row(spec: AcceleratorSpec, baseline: AcceleratorSpec, shape: ModelShape, batch: int, devices: int,
                 pattern: Pattern, prune: bool, timing: Timing, ideal_memory: bool) -> GemmRow:
    """The LM head on the last position of each sequence: M = batch, K = hidden, N = vocabulary ÷ devices."""
    gemm = Gemm(shape.num_layers, "lm_head", "prefill", batch, shape.hidden_size,
                math.ceil(shape.vocab_size / devices), prunable=prune)
    use = layer_use(spec, pattern, None, ideal=True, fallback_dense=True) if prune else DENSE_USE
    dense = simulate_gemm(gemm, spec, DENSE_USE, timing=timing, ideal_memory=ideal_memory)
    sparse = simulate_gemm(gemm, spec, use, timing=timing, ideal_memory=ideal_memory) if use.sparse else dense
    base = simulate_gemm(gemm, baseline, DENSE_USE, timing=timing, ideal_memory=ideal_memory)
    return GemmRow(gemm=gemm, use=use, sparse=sparse, dense=dense, baseline=base)


def _linear_op(row: GemmRow, layer: int, name: str, spec: AcceleratorSpec, baseline: AcceleratorSpec,
               value_bytes: float) -> OpTime:
    gemm, count = row.gemm, row.gemm.count
    to_us = 1 / spec.clock_GHz / 1e3
    return OpTime(layer, name, "sparse_linear" if row.use.sparse else "dense_linear", row.sparse.cycles * to_us * count,
                  row.dense.cycles * to_us * count, row.baseline.cycles / baseline.clock_GHz / 1e3 * count,
                  flops=2 * gemm.macs, bytes=row.sparse.level_bytes[0].total * count,
                  activation_bytes=gemm.m * (gemm.k + gemm.n) * value_bytes * count, count=count)


@functools.lru_cache(maxsize=1 << 14)
def _plan(ctx: _Ctx, spec: AcceleratorSpec, baseline: AcceleratorSpec, where: str, window: int, compressed: tuple,
          steps: int) -> tuple:
    """The timed ops of one kind of layer (``where``: ``before``, ``first``, ``layer`` or ``after`` the decoder
    layers): a linear GEMM as its projection's name (timed per layer), every other op as its :class:`OpTime`.
    Layers alike in position, window and compressed outputs share one plan."""
    if where in ("before", "after"):
        before, after = edge_nodes(ctx)
        nodes = before if where == "before" else after
    else:
        nodes = layer_nodes(ctx, where == "first", window, compressed)
    plan = []
    for node in nodes:
        if node.op_class == "linear":
            plan.append(node.name)
            continue
        op = _time_node(node, spec, baseline, ctx.devices)
        if node.attention and steps > 1:
            op = replace(op, **_attention_mean(ctx, node.attention, ctx.context, steps, spec, baseline))
        plan.append(op)
    return tuple(plan)


def _step(ctx: _Ctx, spec: AcceleratorSpec, baseline: AcceleratorSpec, run: ModelRun, lm_head: GemmRow,
          phase: str, steps: int = 1) -> Step:
    """One step at ``ctx``; with ``steps`` > 1 (decode) the attention kernels are the mean over contexts
    ctx.context … ctx.context + steps − 1 (nothing else depends on the context)."""
    rows = {(row.gemm.layer, row.gemm.projection): row for row in run.rows}
    shape = ctx.shape
    entries = []
    linear_ops: dict[tuple, OpTime] = {}  # layers whose GEMMs share results share one op (the rows are alive here)

    def add(layer: int, plan: tuple) -> None:
        for item in plan:
            if isinstance(item, str):
                row = lm_head if item == "lm_head" else rows[(layer, item)]
                key = (item, id(row.sparse), id(row.dense), id(row.baseline), row.gemm.count, row.use.sparse)
                op = linear_ops.get(key)
                if op is None:
                    op = linear_ops[key] = _linear_op(row, layer, item, spec, baseline, ctx.value_bytes)
                entries.append((layer, op))
            else:
                entries.append((layer, item))

    add(-1, _plan(ctx, spec, baseline, "before", 0, (), steps))
    for layer in range(shape.num_layers):
        add(layer, _plan(ctx, spec, baseline, "first" if layer == 0 else "layer", shape.window(layer),
                         layer_consumers(ctx, spec, rows, layer), steps))
    add(shape.num_layers, _plan(ctx, spec, baseline, "after", 0, (), steps))
    return Step(phase, ctx.batch, ctx.queries, ctx.context + (steps - 1) / 2, tuple(entries))


# --- memory -------------------------------------------------------------------------------------------------------
def memory_use(spec: AcceleratorSpec, shape: ModelShape, batch: int, context: int, devices: int,
               largest_activation: float, weight_compression: float = 1.0) -> MemoryUse:
    """Bytes per device: every weight (linear weights × ``weight_compression`` on a weight-sparse design), the KV
    cache of ``batch`` sequences at ``context`` tokens (min(context, window) on sliding-window layers), and
    ``largest_activation``."""
    vb = spec.compute.value_bits / 8
    linear = shape.projection_weight_count()
    other = shape.weight_count() - linear
    weights = (linear * weight_compression + other) * vb / devices
    per_token = 2 * (shape.num_kv_heads // devices) * shape.head_dim * spec.kv_bits / 8
    kv = batch * per_token * sum(min(context, shape.window(layer)) if shape.window(layer) else context
                                 for layer in range(shape.num_layers))
    return MemoryUse(weights, kv, largest_activation, float(spec.memory[0].capacity_bytes))


def capacity_message(run: InferenceRun) -> str:
    """Why ``run`` does not fit its device, and the smallest tensor-parallel degree that does."""
    return _capacity_text(run.spec, run.shape, run.memory, run.batch, run.prompt + run.generate, run.devices)


def _gib(size_bytes: float) -> str:
    """``size_bytes`` in GiB, or in MiB / KiB / bytes when that would read 0.0 GiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size_bytes >= 0.1 * scale:
            return f"{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes:.0f} bytes"


def _capacity_text(spec: AcceleratorSpec, shape: ModelShape, mem: MemoryUse, batch: int, tokens: int,
                   devices: int) -> str:
    activations = f", largest op's activations {_gib(mem.activations)}" if mem.activations else ""
    message = (f"{shape.name} does not fit {spec.name} ({spec.source}): it needs {_gib(mem.total)} per device "
               f"(weights {_gib(mem.weights)}, KV cache {_gib(mem.kv_cache)} at batch {batch} × {tokens} tokens"
               f"{activations}) and the device's {spec.memory[0].name} (memory[0]) holds {_gib(mem.capacity)}")
    degree = smallest_fitting_degree(shape, mem, devices)
    if degree is None:
        return message + f"; no tensor-parallel degree up to {MAX_DEVICES} that divides the model's heads fits"
    if spec.interconnect is None:
        return message + f"; it would fit on {degree} devices, but the design describes no interconnect"
    return message + f"; it fits with --devices {degree}"


def weight_compression(spec: AcceleratorSpec, shape: ModelShape, pattern: Pattern) -> float:
    """Stored bytes of a linear weight over its dense bytes: below 1 on a weight-sparse design running ``pattern``."""
    if spec.sparsity.operand == "weight" and pattern.kind == "nm" and pattern in spec.sparsity.patterns:
        k = shape.hidden_size
        return compressed_row_bytes(k, pattern, spec.compute.value_bits, spec.sparsity.metadata_format) \
            / (k * spec.compute.value_bits / 8)
    return 1.0


def check_fits(spec: AcceleratorSpec, shape: ModelShape, pattern: Pattern, *, batch: int, context: int,
               devices: int = 1) -> None:
    """Raise unless the weights and the KV cache of ``batch`` sequences at ``context`` tokens fit one device's
    off-chip memory (``memory[0]``); the check of a run without its end-to-end step (no activations counted)."""
    check_divides(shape, devices)
    memory = memory_use(spec, shape, batch, context, devices, 0.0, weight_compression(spec, shape, pattern))
    if not memory.fits:
        raise NmsimError(_capacity_text(spec, shape, memory, batch, context, devices))


MAX_DEVICES = 64  # the largest tensor-parallel degree tried


def smallest_fitting_degree(shape: ModelShape, memory: MemoryUse, devices: int) -> int | None:
    """The smallest degree above ``devices`` that divides ``shape`` and fits, from ``memory`` (one device's use at
    ``devices``): activations scale with 1/degree, the rest exactly."""
    for degree in range(devices + 1, MAX_DEVICES + 1):
        try:
            check_divides(shape, degree)
        except NmsimError:
            continue
        if memory.total * devices / degree <= memory.capacity:
            return degree
    return None


# --- the whole run ------------------------------------------------------------------------------------------------
def simulate_inference(
    spec: AcceleratorSpec,
    shape: ModelShape,
    *,
    pattern: Pattern,
    baseline: AcceleratorSpec,
    batch: int,
    prompt: int,
    generate: int = DEFAULT_GENERATE,
    trace: TraceData | None = None,
    ideal: bool = False,
    fallback_dense: bool = False,
    devices: int = 1,
    attention: str = "fused",
    prune_lm_head: bool = False,
    ideal_memory: bool = False,
    timing: Timing | None = None,
    phases: tuple[str, ...] = ("prefill", "decode"),
) -> InferenceRun:
    """Prefill of ``batch`` prompts of ``prompt`` tokens, then ``generate`` decode steps (contexts prompt + 1 …
    prompt + generate, averaged), on ``devices`` tensor-parallel devices (``phases``: only these). Memory is
    checked, not enforced: see :attr:`MemoryUse.fits` and :func:`capacity_message`."""
    timing = timing or load_timing()
    if attention not in ATTENTION_KINDS:
        raise NmsimError(f"attention {attention!r}: choose {' or '.join(ATTENTION_KINDS)}")
    if prompt < 1 or generate < 1 or batch < 1:
        raise NmsimError(f"batch {batch}, prompt {prompt} and generated tokens {generate} must be at least 1")
    require_vector_unit(spec)
    require_vector_unit(baseline)
    check_divides(shape, devices)
    if devices > 1:
        allreduce_cycles(1, devices, spec)  # raises when the design has no interconnect
    common = {"pattern": pattern, "baseline": baseline, "trace": trace, "ideal": ideal,
              "fallback_dense": fallback_dense, "timing": timing, "devices": devices, "ideal_memory": ideal_memory}
    linear = {phase: simulate_model(spec, shape, phase=phase, batch=batch, seq=prompt, **common) for phase in phases}
    lm_head = _lm_head_row(spec, baseline, shape, batch, devices, pattern, prune_lm_head, timing, ideal_memory)
    base = {"shape": shape, "batch": batch, "devices": devices, "value_bytes": spec.compute.value_bits / 8,
            "kv_bytes": spec.kv_bits / 8, "attention": attention,
            "single_pass_max": timing.softmax_single_pass_max_elements, "block_queries": timing.attention_block_queries}
    prefill = decode = None
    if "prefill" in phases:
        prefill = _step(_Ctx(queries=prompt, context=prompt, **base), spec, baseline, linear["prefill"], lm_head,
                        "prefill")
    if "decode" in phases:
        decode = _step(_Ctx(queries=1, context=prompt + 1, **base), spec, baseline, linear["decode"], lm_head,
                       "decode", steps=generate)
    largest = max(op.activation_bytes for step in (prefill, decode) if step is not None for _, op in step.entries)
    memory = memory_use(spec, shape, batch, prompt + generate, devices, largest,
                        weight_compression(spec, shape, pattern))
    run = InferenceRun(spec, baseline, shape, pattern, batch, prompt, generate, devices, attention, prefill, decode,
                       linear, memory, linear[phases[0]].statistics)
    log.debug("inference %s on %s (%s): %s", shape.name, spec.name, pattern,
              ", ".join(f"{name} {step.time_us:.1f} us" for name, step in (("prefill", prefill), ("decode", decode))
                        if step is not None))
    return run

