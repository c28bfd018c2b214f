"""Shared test setup: one CPU thread (torch and the numba selection kernel), and the real model fixtures."""

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # must be set before numba is first imported

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smollm():
    """The real embedded default model (SmolLM2-135M-Instruct), loaded once per test session."""
    from nmsim.llm.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def test_ids(smollm):
    """WikiText-2 test split tokenized with the SmolLM2 tokenizer (the standard protocol)."""
    from nmsim.llm.data import load_split

    return smollm.token_ids(load_split("test"))
