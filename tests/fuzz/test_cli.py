"""CLI arguments, generated: numbers that are not numbers (nan, inf, -1, 0, 1e30, ''), report names that would
leave the report root, and paths of the wrong kind (missing, a folder where a file goes, a file where a folder
goes, empty or junk files) for the cheap commands. Each must end in a clean refusal or a correct result, never a
traceback. Only torch-free commands run (simulate --linear-only on smollm2-135m, sweep, summary, traces verify and
stats, validate --set, run up to its name check), so the suite takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmsim.report.folder import check_report_name

REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
NOT_NUMBERS = ["nan", "NaN", "inf", "-inf", "1e30", "1e3", "", " ", "abc", "1.5", "0x10", "-1", "0", "-0",
               "99999999999999999999999", "1_0", "--1", "½"]
SIMULATE = ("simulate", "--hw", "act-8of16", "--model", "smollm2-135m", "--linear-only")


def _ends_cleanly(outcome) -> None:
    """Exit 0 without a traceback, or a clean refusal."""
    if outcome.code == 0:
        outcome.accepted()
    else:
        outcome.refused()


def _parses_as_count(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value


# --- numbers ---------------------------------------------------------------------------------------------------
@settings(FUZZ, max_examples=20)
@given(option=st.sampled_from(["--batch", "--seq", "--generate", "--devices"]),
       value=st.one_of(st.sampled_from(NOT_NUMBERS), st.integers(-3, 300).map(str)))
def test_simulate_count_options(cli, option, value):
    if (_parses_as_count(value) or 0) > 10**6:
        return  # bounded work is checked elsewhere; here it would only run long
    outcome = cli(*SIMULATE, option, value)
    count = _parses_as_count(value)
    if count is None or count < 1:
        outcome.refused(option)
    else:
        _ends_cleanly(outcome)  # a tensor-parallel degree that does not divide the heads is a clean refusal


@FUZZ
@given(option=st.sampled_from(["--workers"]), value=st.sampled_from(NOT_NUMBERS))
def test_sweep_count_options(cli, tmp_path, option, value):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("design: act-8of16\nparameters:\n  memory[0].bandwidth_GBps: [800]\nphases: [decode]\n"
                     "batch_sizes: [1]\nseq_tokens: 64\n")
    outcome = cli("sweep", sweep, option, value, "--out", tmp_path / "out")
    count = _parses_as_count(value)
    if count is None or count < 1:
        outcome.refused(option)
    else:
        _ends_cleanly(outcome)


@FUZZ
@given(option=st.sampled_from(["--prefill-tokens", "--decode-batches", "--decode-contexts"]),
       value=st.one_of(st.sampled_from(NOT_NUMBERS), st.lists(st.sampled_from(NOT_NUMBERS), min_size=2,
                                                              max_size=3).map(",".join)))
def test_run_number_lists_are_checked_before_any_work(cli, tmp_path, option, value):
    if all((n := _parses_as_count(part.strip())) is not None and n >= 1 for part in value.split(",") if part.strip()) \
            and any(part.strip() for part in value.split(",")):
        return  # a valid list: the run would start
    cli("run", "--report-root", tmp_path, option, value).refused(option)


# --- report names ----------------------------------------------------------------------------------------------
NAME_PARTS = st.sampled_from(["..", ".", "/", "\\", "\x00", "\n", "a", "report", "-x", "é", " ", "~", "$HOME", "*"])


@FUZZ
@given(name=st.one_of(st.lists(NAME_PARTS, max_size=5).map("".join), st.text(max_size=12)))
def test_run_name_stays_inside_the_report_root(cli, tmp_path, name):
    """A name is accepted only if joined to the root it is one folder right inside it; a refusal names --name."""
    root = tmp_path / "reports"
    seen = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("nmsim.pipeline.run", lambda request: seen.append(request))
        outcome = cli("run", "--report-root", root, "--name", name)
    try:
        check_report_name(name)
        valid = True
    except Exception:
        valid = False
    if "\x00" in name or not valid:
        outcome.refused("--name")
        assert not seen
    else:
        outcome.accepted()
        target = (seen[0].out_root / seen[0].name).absolute()
        assert target.parent == root.absolute() and not target.name.startswith(".") and target.name == name


# --- paths of the wrong kind -----------------------------------------------------------------------------------
def _path(tmp: Path, kind: str) -> Path:
    """A path of ``kind``: missing, folder, empty (file), junk (text file), binary (random bytes)."""
    path = tmp / f"p-{kind}"
    if kind == "folder":
        path.mkdir(exist_ok=True)
    elif kind == "empty":
        path.write_text("")
    elif kind == "junk":
        path.write_text("a,b\n1,\n\"unterminated\n")
    elif kind == "binary":
        path.write_bytes(bytes(range(1, 256)) * 3)
    return path


KINDS = st.sampled_from(["missing", "folder", "empty", "junk", "binary"])
COMMANDS = {  # where a file is read or written: {} is the path
    "summary": ("summary", "{}"),
    "summary --out": ("summary", str(REPO / "reports" / "study_smollm2_16k.csv"), "--out", "{}"),
    "traces verify": ("traces", "verify", "{}"),
    "traces stats": ("traces", "stats", "{}"),
    "validate --set": ("validate", "--set", "{}", "--hw", "a100-dense", "--only-user-set"),
    "simulate --hw": ("simulate", "--hw", "{}", "--model", "smollm2-135m", "--linear-only"),
    "simulate --model": ("simulate", "--hw", "act-8of16", "--model", "{}", "--linear-only"),
    "simulate --traces": (*SIMULATE, "--traces", "{}"),
    "simulate --json": (*SIMULATE, "--json", "{}"),
    "sweep": ("sweep", "{}"),
}


@FUZZ
@given(command=st.sampled_from(sorted(COMMANDS)), kind=KINDS)
def test_paths_of_every_kind_end_cleanly(cli, tmp_path, command, kind):
    path = _path(tmp_path, kind)
    outcome = cli(*(str(path) if part == "{}" else part for part in COMMANDS[command]))
    if command == "simulate --json" and kind == "folder":
        outcome.refused(str(path), "is a directory")
    elif command == "summary --out" and kind == "folder":
        outcome.refused(str(path))
    elif command not in ("simulate --json", "summary --out", "summary"):  # reading a file that is not one
        outcome.refused()
    else:
        _ends_cleanly(outcome)


@pytest.mark.parametrize("args", [
    ("traces", "stats", str(REPO / "traces" / "smollm2-135m_8of16_magnitude_none" / "sample"), "--out", "{}"),
    ("capture", "--out", "{}"),  # refused before the model loads
    ("run", "--report-root", "{}"),
    ("traces", "index", "--root", "{}"),
])
def test_a_file_where_a_folder_goes_is_refused_first(cli, tmp_path, args):
    path = _path(tmp_path, "junk")
    outcome = cli(*(str(path) if part == "{}" else part for part in args))
    outcome.refused(str(path), "is a file")
    assert path.read_text() == "a,b\n1,\n\"unterminated\n"

