"""WikiText-2 discovery, the row protocol, and window construction."""

import pytest
import torch

from nmsim.errors import NmsimError
from nmsim.llm.data import calibration_windows, evaluation_windows, load_split, rows_to_text


def test_rows_follow_the_hf_protocol():
    lines = [" = Title = \n", " \n", " Some text . \n"]
    # rows " = Title = \n", "", " Some text . \n" joined by "\n\n"
    assert rows_to_text(lines) == " = Title = \n" + "\n\n" + "" + "\n\n" + " Some text . \n"


def test_shared_data_is_found_and_calibration_uses_validation(monkeypatch):
    monkeypatch.delenv("NMSIM_DATA", raising=False)
    test = load_split("test")
    calibration = load_split("calibration")
    assert test.name == "wikitext-2-raw/wiki.test.raw"
    assert calibration.name == "wikitext-2-raw/wiki.valid.raw"  # no train split is shipped
    assert test.text.startswith("\n\n = Robert Boulter = \n\n\n\n")  # the file opens with a blank line
    assert test.text.count("\n\n") > 4000


def test_env_variable_and_missing_data(monkeypatch, tmp_path):
    (tmp_path / "wiki.test.raw").write_text("a\n \nb\n")
    monkeypatch.setenv("NMSIM_DATA", str(tmp_path))
    assert load_split("test").text == "a\n" + "\n\n" + "" + "\n\n" + "b\n"
    with pytest.raises(NmsimError, match="NMSIM_DATA"):
        load_split("calibration", tmp_path)


def test_evaluation_windows_without_and_with_bos():
    ids = torch.arange(20)
    plain = evaluation_windows(ids, 6)
    assert plain.tolist() == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 16, 17]]
    with_bos = evaluation_windows(ids, 6, bos_id=99)
    assert with_bos[:, 0].tolist() == [99] * 4 and with_bos[1, 1:].tolist() == [5, 6, 7, 8, 9]
    assert evaluation_windows(ids, 6, max_tokens=13).shape == (2, 6)
    assert evaluation_windows(ids, 6, max_tokens=1).shape == (1, 6)
    with pytest.raises(NmsimError, match="fewer than one window"):
        evaluation_windows(ids[:3], 6)


def test_calibration_windows_are_seeded():
    ids = torch.arange(1000)
    a = calibration_windows(ids, 4, 16, seed=42)
    assert a.shape == (4, 16)
    assert torch.equal(a, calibration_windows(ids, 4, 16, seed=42))
    assert not torch.equal(a, calibration_windows(ids, 4, 16, seed=7))
    assert all(torch.equal(w, torch.arange(int(w[0]), int(w[0]) + 16)) for w in a)
