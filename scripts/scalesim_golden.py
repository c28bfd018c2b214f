"""Regenerate tests/sim/scalesim_golden.json: dense GEMM cycles from SCALE-Sim 3.0.0 (stall-free CALC mode).

Needs SCALE-Sim in a venv of its own (see ../shared/reference/scalesim.md):
    python3 -m venv /tmp/ssvenv && /tmp/ssvenv/bin/pip install scalesim==3.0.0 "numpy<2.4"
    /tmp/ssvenv/bin/python scripts/scalesim_golden.py tests/sim/scalesim_golden.json
Random GEMMs (seeded) on four array shapes for each dataflow, plus the 128x576x1536 OS 32x32 anchor.

Timing mode (``nmsim bench simulate`` drives it): one SCALE-Sim run per GEMM, one after another, each timed from
config parse to report, one JSON line per GEMM on stdout (m, k, n, total_cycles, seconds):
    /tmp/ssvenv/bin/python scripts/scalesim_golden.py --time 32 32 os 128,576,576 128,576,192
"""

import contextlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from scalesim.scale_sim import scalesim

CONFIG = """[general]
run_name = golden

[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : 256
FilterSramSzkB : 256
OfmapSramSzkB : 128
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Bandwidth : 10
Dataflow : {dataflow}
ReadRequestBuffer : 32
WriteRequestBuffer : 32

[layout]
IfmapCustomLayout : False
IfmapSRAMBankBandwidth : 10
IfmapSRAMBankNum : 10
IfmapSRAMBankPort : 2
FilterCustomLayout : False
FilterSRAMBankBandwidth : 10
FilterSRAMBankNum : 10
FilterSRAMBankPort : 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : CALC
UseRamulatorTrace : False
"""


def run(rows, cols, dataflow, gemms):
    """SCALE-Sim "Total Cycles" and stall cycles for each (m, k, n)."""
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        (work / "c.cfg").write_text(CONFIG.format(rows=rows, cols=cols, dataflow=dataflow))
        # GEMM topology rows: Layer, M, N, K, -- the trailing comma is required by the parser
        rows_text = "".join(f"g{i}, {m}, {n}, {k},\n" for i, (m, k, n) in enumerate(gemms))
        (work / "t.csv").write_text("Layer, M, N, K,\n" + rows_text)
        (work / "l.csv").write_text("Layer,\n")
        sim = scalesim(save_disk_space=True, verbose=False, config=str(work / "c.cfg"),
                       topology=str(work / "t.csv"), layout=str(work / "l.csv"), input_type_gemm=True)
        sim.run_scale(top_path=str(work / "out"))
        reports = [layer.get_compute_report_items() for layer in sim.runner.single_layer_sim_object_list]
    return [(int(r[1]), int(r[2])) for r in reports]


def main(out_path):
    random.seed(7)
    cases = []
    for dataflow in ("os", "ws", "is"):
        for rows, cols in ((4, 8), (16, 4), (8, 8), (32, 32)):
            gemms = [(random.randint(1, 70), random.randint(1, 90), random.randint(1, 60)) for _ in range(3)]
            for (m, k, n), (total, stall) in zip(gemms, run(rows, cols, dataflow, gemms)):
                cases.append({"dataflow": dataflow, "rows": rows, "cols": cols, "m": m, "k": k, "n": n,
                              "total_cycles": total, "stall_cycles": stall})
    (total, stall), = run(32, 32, "os", [(128, 576, 1536)])
    cases.append({"dataflow": "os", "rows": 32, "cols": 32, "m": 128, "k": 576, "n": 1536,
                  "total_cycles": total, "stall_cycles": stall})
    payload = {"source": "SCALE-Sim 3.0.0 (PyPI), API, InterfaceBandwidth CALC, scripts/scalesim_golden.py",
               "date": "2026-11-29", "cases": cases}
    Path(out_path).write_text(json.dumps(payload, indent=1) + "\n")


def time_gemms(rows, cols, dataflow, gemms):
    """Print one JSON line per (m, k, n): SCALE-Sim's total cycles and the seconds its run took."""
    for m, k, n in gemms:
        with contextlib.redirect_stdout(sys.stderr):  # SCALE-Sim's own messages stay off the JSON lines
            started = time.perf_counter()
            (total, _), = run(rows, cols, dataflow, [(m, k, n)])
            seconds = time.perf_counter() - started
        print(json.dumps({"m": m, "k": k, "n": n, "total_cycles": total, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--time":
        rows, cols, dataflow, *shapes = sys.argv[2:]
        time_gemms(int(rows), int(cols), dataflow, [tuple(int(x) for x in shape.split(",")) for shape in shapes])
    else:
        main(sys.argv[1])
