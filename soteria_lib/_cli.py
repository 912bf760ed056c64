"""What the three command lines share: one-line usage errors, argument types, the exit rule.

Private to ``reconstruct``, ``fedavg`` and ``experiments``; no library module imports it. Bad
input exits with status 2 and one line on stderr, before any work. The command lines are shown in
chapters 2, 5 and 6 and in the README.
"""
from __future__ import annotations

import argparse
import math
import sys


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _typed(name: str, convert, accept, rule: str):
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return value
    parse.__name__ = name  # argparse's "invalid <type> value" message
    return parse


positive_int = _typed("positive int", int, lambda v: v >= 1, "a positive integer")
non_negative_int = _typed("non-negative int", int, lambda v: v >= 0, "an integer >= 0")
finite_float = _typed("finite float", float, math.isfinite, "a finite number")
non_negative_float = _typed("non-negative float", float, lambda v: math.isfinite(v) and v >= 0,
                            "a finite number >= 0")
positive_float = _typed("positive float", float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def fail(prog: str, message: str, code: int = 2) -> int:
    """Print ``prog: error: message`` on stderr and return ``code`` (2: usage, 1: a failed run)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code
