"""The fuzz suite's harness: run the CLI in-process on a mutated input and check how it ends.

Every case must end in one of two ways: a clean refusal (exit 2, one ``nmsim: error:`` line on stderr, no
traceback; argparse's ``nmsim COMMAND: error:`` counts) or a documented correct result (exit 0). ``cli`` returns
a :class:`CliOutcome`; ``refused`` and ``accepted`` assert the two endings. An exception escaping ``main`` is a
traceback a user would see, so the test fails with it.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass

import pytest

_ERROR_LINE = re.compile(r"^nmsim(?: [\w-]+)?: error: ")


@dataclass
class CliOutcome:
    args: list[str]
    code: int
    stdout: str
    stderr: str

    def refused(self, *needles: str) -> str:
        """Assert a clean exit 2 whose one error line contains every needle (case-insensitive); returns the line."""
        lines = [line for line in self.stderr.splitlines() if _ERROR_LINE.match(line)]
        shown = f"nmsim {' '.join(self.args)}: exit {self.code}\n{self.stderr[-2000:]}"
        assert self.code == 2, f"expected exit 2: {shown}"
        assert len(lines) == 1, f"expected one error line: {shown}"
        assert "Traceback" not in self.stderr, shown
        for needle in needles:
            assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
        return lines[0]

    def accepted(self) -> None:
        """Assert exit 0 with no traceback."""
        assert self.code == 0, f"nmsim {' '.join(self.args)}: exit {self.code}\n{self.stderr[-2000:]}"
        assert "Traceback" not in self.stderr


def run_cli(*args) -> CliOutcome:
    """``nmsim ARGS`` in this process; argparse's own errors (SystemExit 2) count as refusals."""
    from nmsim.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return CliOutcome([str(a) for a in args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return run_cli
