"""Tables of an end-to-end run (:mod:`nmsim.sim.inference`): per op, per op class, and layers collapsed.

- :func:`op_table`: one row per op of one step (every layer), units in the column names;
- :func:`class_table`: µs per op class for prefill (TTFT) and decode (TPOT), with shares;
- :func:`layer_groups`: the decoder layers that run the same ops (same attention window, same kinds of ops)
  collapsed into one row per op: the mean µs per layer and the total over the group;
- :func:`summary_lines`: the terminal summary.
"""

from __future__ import annotations

import pandas as pd

from nmsim.sim.inference import OP_CLASSES, InferenceRun, Step


def op_table(step: Step) -> pd.DataFrame:
    """Every op of ``step``: layer, op, class, µs (design, same design dense, baseline), bytes and FLOPs."""
    return pd.DataFrame([{
        "layer": op.layer, "op": op.name, "op_class": op.op_class, "time_us": op.time_us,
        "dense_time_us": op.dense_time_us, "baseline_time_us": op.baseline_time_us, "kv_time_us": op.kv_time_us,
        "flops": op.flops, "offchip_bytes": op.bytes, "kv_bytes": op.kv_bytes, "selector_bytes": op.selector_bytes,
        "count": op.count,
    } for op in step.ops])


def class_table(run: InferenceRun) -> pd.DataFrame:
    """µs per op class and phase, and each class's share of the step."""
    rows = []
    for name in OP_CLASSES:
        row = {"op_class": name}
        for phase, step in (("prefill", run.prefill), ("decode", run.decode)):
            value = step.by_class()[name]
            row[f"{phase}_us"] = value
            row[f"{phase}_share"] = value / step.time_us
        rows.append(row)
    return pd.DataFrame(rows)


def _ranges(layers: list[int]) -> str:
    parts, start = [], layers[0]
    for previous, current in zip(layers, layers[1:] + [None]):
        if current != previous + 1:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = current
    return ",".join(parts)


def layer_groups(step: Step, run: InferenceRun) -> pd.DataFrame:
    """One row per op of each group of alike layers (same window and op list): mean µs per layer and the total."""
    table = op_table(step)
    layers = table[(table.layer >= 0) & (table.layer < run.shape.num_layers)]
    signature: dict[int, tuple] = {}
    for layer, ops in layers.groupby("layer", sort=True):
        signature[int(layer)] = (run.shape.window(int(layer)), tuple(ops.op))
    groups: dict[tuple, list[int]] = {}
    for layer, key in signature.items():
        groups.setdefault(key, []).append(layer)
    rows = []
    outside = table[(table.layer < 0) | (table.layer >= run.shape.num_layers)]
    for _, op in outside.iterrows():
        rows.append({"layers": "embedding" if op.layer < 0 else "head", "op": op.op, "op_class": op.op_class,
                     "time_us_per_layer": op.time_us, "time_us": op.time_us, "dense_time_us": op.dense_time_us})
    for (window, _), members in groups.items():
        label = f"{_ranges(members)} (x{len(members)}" + (f", window {window})" if window else ")")
        part = layers[layers.layer.isin(members)]
        for name, ops in part.groupby("op", sort=False):
            rows.append({"layers": label, "op": name, "op_class": ops.op_class.iloc[0],
                         "time_us_per_layer": ops.time_us.mean(), "time_us": ops.time_us.sum(),
                         "dense_time_us": ops.dense_time_us.sum()})
    order = {"embedding": 0, "head": 2}
    frame = pd.DataFrame(rows)
    return frame.sort_values("layers", key=lambda c: c.map(lambda v: order.get(v, 1)), kind="stable") \
        .reset_index(drop=True)


def summary_lines(run: InferenceRun) -> list[str]:
    """TTFT, TPOT, throughput, memory and the speedups, for the terminal."""
    s = run.summary()
    lines = [
        f"end to end ({run.devices} device{'s' if run.devices > 1 else ''}, {run.attention} attention, batch "
        f"{run.batch}, prompt {run.prompt}, {run.generate} generated tokens averaged):",
        f"  TTFT {s['ttft_ms']:.4g} ms ({s['prefill_tokens_per_s']:.4g} prompt tokens/s) | TPOT {s['tpot_ms']:.4g} ms "
        f"({s['decode_tokens_per_s']:.4g} tokens/s)",
        f"  speedup over the same design dense: prefill {s['prefill_e2e_speedup_vs_dense_same_design']:.3f}x end to end"
        f" ({s['prefill_linear_speedup_vs_dense_same_design']:.3f}x linear layers alone, "
        f"{100 * s['prefill_linear_share']:.0f}% of the step), decode "
        f"{s['decode_e2e_speedup_vs_dense_same_design']:.3f}x ({s['decode_linear_speedup_vs_dense_same_design']:.3f}x"
        f" linear, {100 * s['decode_linear_share']:.0f}%)",
        f"  memory per device: {s['memory_used_GB']:.3g} GB of {s['memory_capacity_GB']:.3g} GB (weights "
        f"{s['weights_GB']:.3g}, KV cache {s['kv_cache_GB']:.3g}, largest op's activations "
        f"{s['activations_GB']:.3g})",
    ]
    return lines
