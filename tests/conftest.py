"""Shared test setup: keep the tests to one CPU thread (torch and the numba selection kernel)."""

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # must be set before numba is first imported

import torch  # noqa: E402

torch.set_num_threads(1)
