"""An installed nmsim finds its presets outside a checkout: build the wheel, install it into a fresh venv, and run
``nmsim simulate`` from an empty directory.

No network: the wheel is built with the running environment's setuptools (``--no-build-isolation --no-index``),
installed with ``--no-deps``, and the fresh venv sees this environment's packages through a ``.pth`` file (a plain
path line, appended after the venv's own site-packages, so the installed nmsim is the one imported; an editable
install of the checkout stays inert because ``.pth`` files in an added directory are not processed).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
WHEEL_LIMIT_BYTES = 5 * 2**20  # the presets are ~1 MB of statistics; the sample/ shards alone would be ~30 MB
_NOT_COPIED = shutil.ignore_patterns(".git", ".venv", ".hypothesis", ".pytest_cache", "__pycache__", "*.egg-info",
                                     "build", "dist", "reports", "tests")


def _run(args, *, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONNOUSERSITE="1")
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (f"{' '.join(map(str, args))} exited {done.returncode}\n"
                                  f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}")
    return done


def _expected_presets() -> dict[str, Path]:
    """Wheel member → the checkout file it must carry (the symlinked preset directories followed)."""
    expected = {"nmsim/presets/models.yaml": ROOT / "nmsim" / "presets" / "models.yaml",
                "nmsim/presets/traces/README.md": ROOT / "traces" / "README.md"}
    for path in sorted((ROOT / "hw_configs").glob("*.yaml")):
        expected[f"nmsim/presets/designs/{path.name}"] = path
    for path in sorted((ROOT / "nmsim" / "presets" / "measurements").iterdir()):
        expected[f"nmsim/presets/measurements/{path.name}"] = path
    for trace in sorted(p for p in (ROOT / "traces").iterdir() if (p / "stats").is_dir()):
        for path in [trace / "full_manifest.json", trace / "profile.json", *sorted((trace / "stats").glob("*.csv")),
                     trace / "stats" / "checksums.json"]:
            expected[f"nmsim/presets/traces/{path.relative_to(ROOT / 'traces').as_posix()}"] = path
    return expected


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of a copy of the checkout (building in the checkout itself would write build/ there)."""
    source = tmp_path_factory.mktemp("source") / "nmsim-src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_NOT_COPIED)
    assert (source / "nmsim" / "presets" / "designs").is_symlink()  # the wheel build must follow the links
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", out,
          "."], cwd=source)
    (built,) = out.glob("nmsim-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed, seeing this environment's dependencies; its bin/ directory."""
    root = tmp_path_factory.mktemp("venv") / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root.parent)
    python = root / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel],
         cwd=root.parent)
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        cwd=root.parent).stdout.strip())
    # after installing, so pip never sees (nor tries to replace) this environment's nmsim
    (purelib / "_nmsim_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    return root / "bin"


@pytest.fixture
def empty_dir(tmp_path) -> Path:
    work = tmp_path / "elsewhere"
    work.mkdir()
    return work


def test_wheel_ships_the_presets_as_files(wheel):
    assert wheel.stat().st_size < WHEEL_LIMIT_BYTES, f"{wheel.name}: {wheel.stat().st_size} bytes"
    with zipfile.ZipFile(wheel) as archive:
        members = {info.filename: info for info in archive.infolist()}
        expected = _expected_presets()
        missing = sorted(set(expected) - set(members))
        assert not missing, f"{wheel.name} lacks {missing}"
        for name, source in expected.items():
            mode = members[name].external_attr >> 16
            assert not mode or stat.S_ISREG(mode), f"{name}: not a regular file in the wheel (mode {mode:o})"
            assert archive.read(name) == source.read_bytes(), f"{name}: differs from {source}"
        presets = {name for name in members if name.startswith("nmsim/presets/")}
        assert presets == set(expected), f"unexpected preset files: {sorted(presets - set(expected))}"
        assert not [name for name in members if "/sample/" in name or name.endswith(".safetensors")]
        assert {"nmsim/sim/timing.yaml", "nmsim/hw/calibration/cells.yaml"} <= set(members)


def test_installed_registry_finds_the_presets(venv, empty_dir):
    probe = ("import json, nmsim, nmsim.registry as r; "
             "print(json.dumps({'file': nmsim.__file__, 'designs': r.design_names(), 'models': list(r.models()), "
             "'traces': str(r.TRACE_ROOT)}))")
    found = json.loads(_run([venv / "python", "-c", probe], cwd=empty_dir).stdout.strip().splitlines()[-1])
    site = venv.parent / "lib"
    assert Path(found["file"]).is_relative_to(site), f"imported {found['file']}, not the installed package"
    assert found["designs"] == sorted(p.stem for p in (ROOT / "hw_configs").glob("*.yaml"))
    assert {"smollm2-135m", "llama-3.1-8b"} <= set(found["models"])
    assert Path(found["traces"]).is_relative_to(site)
    assert not list(empty_dir.iterdir())


def test_installed_simulate_shape_preset(venv, empty_dir):
    done = _run([venv / "nmsim", "simulate", "--hw", "act-8of16", "--model", "llama-3.1-8b", "--json", "out.json"],
                cwd=empty_dir)
    assert "totals:" in done.stdout and "speedup_vs_baseline" in done.stdout, done.stdout[-2000:]
    result = json.loads((empty_dir / "out.json").read_text(encoding="utf-8"))
    assert result["run"]["design"] == "act-8of16"
    assert result["run"]["statistics"] == "transplanted from smollm2-135m"  # the installed profiles serve
    (totals,) = result["totals"].values()
    assert totals["gemms"] == 32 * 7
    assert 1.0 < totals["speedup_vs_dense_same_design"] <= 2.0


def test_installed_validate_finds_its_measurement_sets(venv, empty_dir):
    done = _run([venv / "nmsim", "validate", "--out", "validation"], cwd=empty_dir)
    assert "a100_fp16_gemm_llmcompass" in done.stdout and "a100_fp16_square_2of4_slidesparse" in done.stdout
    committed = ROOT / "reports" / "validation" / "validation_summary.csv"
    assert (empty_dir / "validation" / "validation_summary.csv").read_bytes() == committed.read_bytes()


def test_installed_simulate_committed_trace(venv, empty_dir):
    trace_root = Path(_run([venv / "python", "-c", "import nmsim.registry as r; print(r.TRACE_ROOT)"],
                           cwd=empty_dir).stdout.strip())
    trace = trace_root / "smollm2-135m_8of16_magnitude_none"
    assert trace.is_dir() and not trace.is_symlink() and not (trace / "sample").exists()
    done = _run([venv / "nmsim", "simulate", "--hw", "act-8of16", "--model", "smollm2-135m", "--traces", trace,
                 "--json", "out.json"], cwd=empty_dir)
    assert "totals:" in done.stdout and "speedup_vs_baseline" in done.stdout, done.stdout[-2000:]
    totals = json.loads((empty_dir / "out.json").read_text(encoding="utf-8"))["totals"]["trace"]
    assert totals["gemms"] == 30 * 7
    # the installed package simulates what the checkout does (the golden prefill b1 case of this design)
    golden = json.loads((ROOT / "tests" / "sim" / "golden_totals.json").read_text(encoding="utf-8"))
    expected = golden["cases"]["act-8of16 | 8:16 | prefill b1"]
    for key in ("cycles", "speedup_vs_dense_same_design", "speedup_vs_baseline", "offchip_bytes", "energy_uJ"):
        assert totals[key] == pytest.approx(expected[key], rel=1e-9), key
