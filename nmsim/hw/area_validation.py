"""The area model held against published area ratios of switches and sparse tensor datapaths.

Each :class:`PublishedRatio` is one figure from a paper or a tool's synthesized tables, the configuration it refers
to, and how nmsim computes the same ratio from its own cells and designs (like with like: the same operand type,
the same way of counting throughput). Details a source does not state are assumptions, named in ``assumed``. The
error is nmsim's value over the published one, minus 1. Nothing here is fitted: the cells and formulas are those of
:mod:`nmsim.hw.area`, and the published figures were not used to choose them.

    python -c "from nmsim.hw.area_validation import area_validation_markdown; print(area_validation_markdown())"
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from nmsim.hw.area import Calibration, CalibrationEntry, Terms, design_terms, load_calibration
from nmsim.hw.spec import AcceleratorSpec, SparsitySpec
from nmsim.patterns import parse_pattern

CORNERS = ("nominal", "low", "high")
SA = "systolic-32x32-os"  # INT8 → INT32, a MAC per accumulator (a systolic PE), 45 nm


@dataclass(frozen=True)
class PublishedRatio:
    """A published ratio, and nmsim's (nominal, low, high) value of the same ratio."""

    name: str
    quantity: str  # what the ratio divides
    published: float
    source: str  # citation, with a provenance tag
    configuration: str  # what the published figure is for
    assumed: str  # what nmsim assumes where the source is silent
    compute: Callable[[Calibration], tuple[float, float, float]]

    def evaluate(self, calibration: Calibration | None = None) -> dict[str, object]:
        """One row: name, quantity, published, nmsim, nmsim_low, nmsim_high, error_pct, inside_range."""
        nominal, low, high = self.compute(calibration if calibration is not None else load_calibration())
        return {"name": self.name, "quantity": self.quantity, "published": self.published, "nmsim": nominal,
                "nmsim_low": low, "nmsim_high": high, "error_pct": 100 * (nominal / self.published - 1),
                "inside_range": low <= self.published <= high, "source": self.source,
                "configuration": self.configuration, "assumed": self.assumed}


def ratio_range(numerator: Terms, denominator: Terms, cal: Calibration, node_nm: float
                ) -> tuple[float, float, float]:
    """(nominal, low, high) of Σ numerator / Σ denominator µm² at ``node_nm``. Each cell takes one factor in both
    sums, anywhere in its [low, high]; the ratio's extremes lie at the corners, all of which are tried. The
    node-scaling factor is common to both sums and cancels."""
    def um2(entry: CalibrationEntry) -> float:
        scale = cal.logic_scaling.factor(entry.node_nm, node_nm) if entry.scales_with_node else 1.0
        return entry.value * scale

    cells = sorted({entry.name: entry for entry, _ in (*numerator, *denominator)}.values(), key=lambda e: e.name)
    weights: dict[str, list[float]] = {}
    for side, terms in ((0, numerator), (1, denominator)):
        for entry, quantity in terms:
            weights.setdefault(entry.name, [0.0, 0.0])[side] += quantity * um2(entry)
    nominal = sum(w[0] for w in weights.values()) / sum(w[1] for w in weights.values())
    ratios = []
    for corner in itertools.product(*((e.low, e.high) for e in cells)):
        top = sum(f * weights[e.name][0] for e, f in zip(cells, corner))
        bottom = sum(f * weights[e.name][1] for e, f in zip(cells, corner))
        ratios.append(top / bottom)
    return nominal, min(ratios), max(ratios)


def switch_to_multiplier(cal: Calibration, bits: int = 16, node_nm: float = 45) -> tuple[float, float, float]:
    """A ``bits``-wide 2:1 routing switch (a MUX2 and a pipeline register per bit) over a ``bits``-wide integer
    multiplier (the 8-bit multiplier × (bits / 8)², as multiplier_4bit is derived)."""
    switch = ((cal.area["mux2"], bits), (cal.area["register_bit"], bits))
    return ratio_range(switch, ((cal.area["multiplier_8bit"], (bits / 8) ** 2),), cal, node_nm)


def _all_terms(spec: AcceleratorSpec, cal: Calibration) -> Terms:
    return tuple(term for terms, _ in design_terms(spec, cal).values() for term in terms)


def iso_throughput_ratio(cal: Calibration, base: AcceleratorSpec, other: AcceleratorSpec, speedup: float
                         ) -> tuple[float, float, float]:
    """Datapath area of ``base`` over that of ``other`` at the same throughput (each MAC of ``other`` doing
    ``speedup`` MACs' work), with :func:`ratio_range`'s bounds; both designs at one node with one MAC count."""
    assert base.technology_nm == other.technology_nm
    assert base.compute.dense_macs_per_cycle == other.compute.dense_macs_per_cycle
    nominal, low, high = ratio_range(_all_terms(base, cal), _all_terms(other, cal), cal, base.technology_nm)
    return speedup * nominal, speedup * low, speedup * high


def sta_design(dot_product_width: int = 1, dbb: bool = False) -> AcceleratorSpec:
    """The INT8 systolic preset with ``dot_product_width``-product PEs and, with ``dbb``, 4:8 weight sparsity
    (index metadata: a density-bound block stores its non-zeros' positions)."""
    spec = AcceleratorSpec.from_name(SA, {"compute.dot_product_width": dot_product_width})
    if not dbb:
        return spec
    return dataclasses.replace(spec, name=f"{spec.name}-dbb", sparsity=SparsitySpec(
        "weight", (parse_pattern("4:8"),), False, "index", "half_split", 0))


STA_WIDTH = 4  # products per tensor-PE dot product (assumed)


def _sta(cal: Calibration) -> tuple[float, float, float]:
    return iso_throughput_ratio(cal, sta_design(), sta_design(STA_WIDTH), 1.0)


def _sta_dbb(cal: Calibration) -> tuple[float, float, float]:
    return iso_throughput_ratio(cal, sta_design(), sta_design(STA_WIDTH, dbb=True), 2.0)


def _dbb_step(cal: Calibration) -> tuple[float, float, float]:
    """STA over STA-DBB at iso-throughput: what the DBB front end gains, the sparse part of the two figures."""
    return iso_throughput_ratio(cal, sta_design(STA_WIDTH), sta_design(STA_WIDTH, dbb=True), 2.0)


STA_SOURCE = ("Liu, Whatmough and Mattina, Systolic Tensor Array, IEEE CAL 2020 (arXiv 2005.08098), abstract: "
              "area reduction at iso-throughput with INT8 operands [A]")
PUBLISHED_RATIOS = (
    PublishedRatio(
        name="stonne_switch", quantity="SWITCH area / MULTIPLIER area", published=108.99 / 1001.0,
        source="STONNE (stonne-simulator/stonne) energy_tables/energy_model.txt: SWITCH AREA=108.99, MULTIPLIER "
               "AREA=1001.0, from synthesis and place-and-route of the MAERI/SIGMA RTL [V]",
        configuration="a MAERI distribution-network switch against a multiplier, same library",
        assumed="16-bit data (the table states neither width nor node); a switch is a MUX2 and a register bit "
                "per data bit; the 16-bit multiplier is the 8-bit Horowitz one × 4 [D]",
        compute=switch_to_multiplier),
    PublishedRatio(
        name="sta", quantity="iso-throughput area, scalar-PE systolic array / STA", published=2.08,
        source=STA_SOURCE,
        configuration="INT8 systolic array of scalar MAC PEs against the best Systolic Tensor Array (tensor PEs "
                      "sharing operands and accumulators)",
        assumed="the tensor PE as 4-product dot-product units (one INT32 accumulator per 4 MACs); nmsim does not "
                "model the STA's operand-register sharing across a tensor PE's rows and columns [M]",
        compute=_sta),
    PublishedRatio(
        name="sta_dbb", quantity="iso-throughput area, scalar-PE systolic array / STA-DBB", published=3.14,
        source=STA_SOURCE.replace("area reduction", "area improvement of STA-DBB on DBB-sparse models"),
        configuration="as above, the STA with density-bound-block weights: at most 4 non-zeros in every 8 "
                      "(twice the throughput per MAC on DBB-sparse models)",
        assumed="4/8 DBB weights as nmsim's weight-sparse 4:8 (select muxes, index metadata, buffering) on the "
                "STA above [M]",
        compute=_sta_dbb),
    PublishedRatio(
        name="sta_dbb_step", quantity="iso-throughput area, STA / STA-DBB", published=3.14 / 2.08,
        source="Derived from the two STA figures above (3.14 / 2.08) [D]",
        configuration="what the DBB front end gains on the same tensor PE: the sparse part alone",
        assumed="as for STA-DBB; the tensor-PE error cancels in this ratio",
        compute=_dbb_step),
)

NOT_COMPARED = (
    "S2TA (Liu et al., HPCA 2022): its abstract gives speedup and energy (over 2× against a zero-gating systolic "
    "array at 16 nm), no area figure was available here",
    "VEGETA (Jeong et al., HPCA 2023): its area and power overheads per engine are in a figure that was not "
    "available here; its abstract gives speedups only",
    "NVIDIA's 2:4 sparse tensor core: no published area overhead was found",
)


def area_validation_rows(calibration: Calibration | None = None) -> list[dict[str, object]]:
    """Every :data:`PUBLISHED_RATIOS` case evaluated (see :meth:`PublishedRatio.evaluate`)."""
    return [case.evaluate(calibration) for case in PUBLISHED_RATIOS]


def area_validation_markdown(calibration: Calibration | None = None) -> str:
    """The table of ``docs/area_model.md``."""
    lines = ["| case | ratio | published | nmsim [low–high] | error | published inside nmsim's range |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in area_validation_rows(calibration):
        lines.append(f"| {row['name']} | {row['quantity']} | {row['published']:.3f} | {row['nmsim']:.3f} "
                     f"[{row['nmsim_low']:.3f}–{row['nmsim_high']:.3f}] | {row['error_pct']:+.1f} % "
                     f"| {'yes' if row['inside_range'] else 'no'} |")
    return "\n".join(lines)
