"""What the three command lines share: one-line usage errors, argument types, output checks and
the exit codes of an interrupted run.

Private to ``reconstruct``, ``fedavg`` and ``experiments``; no library module imports it. Bad
input exits with status 2 and one line on stderr, before any work and before any file is
written; a run that fails exits with 1; Ctrl-C exits with 130 and SIGTERM with 143, after
keeping what was finished. The command lines are shown in chapters 2, 5 and 6 and in the README.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
from pathlib import Path

from .defenses import defense_info, defense_names, from_flags, parse_setting
from .extensions import ExtensionError, load_extensions
from .runtime import MAX_SEED


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
seed_int = _typed("seed", int, lambda v: 0 <= v <= MAX_SEED, f"an integer in [0, {MAX_SEED}]")
finite_float = _typed("finite float", float, math.isfinite, "a finite number")
non_negative_float = _typed("non-negative float", float, lambda v: math.isfinite(v) and v >= 0,
                            "a finite number >= 0")
positive_float = _typed("positive float", float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def add_defense_arguments(parser: argparse.ArgumentParser) -> None:
    """``--defense`` and its settings: generic ``--set KEY=VALUE`` (any setting of the chosen defense,
    repeatable) and the historical flags, aliases of the settings each defense registers for them."""
    parser.add_argument("--defense", default="none", choices=defense_names())
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the defense, e.g. --set pruning_rate=60 (repeatable)")
    parser.add_argument("--pruning_rate", type=finite_float, default=None, help="soteria, prune: percentage in [0, 100)")
    parser.add_argument("--epsilon", type=non_negative_float, default=None, help="soteria: the score guard (default by model)")
    parser.add_argument("--noise", type=non_negative_float, default=None,
                        help="dp-gaussian: sigma; dp-laplace: scale b; dp-sgd: noise multiplier")
    parser.add_argument("--clip", type=positive_float, default=None,
                        help="dp-gaussian, dp-laplace: clip the update's global L2 norm to this before the noise; "
                             "dp-sgd: the per-example clipping norm")


def defense_settings(args) -> dict:
    """The chosen defense's settings from ``--set`` and the historical flags (a ``ValueError`` names a
    flag or setting the defense does not take)."""
    flags = {name: getattr(args, name, None) for name in ("pruning_rate", "epsilon", "noise", "clip")}
    settings = from_flags(args.defense, **flags)
    info = defense_info(args.defense)
    for text in args.settings:
        key, value = parse_setting(info, text)
        settings[key] = value
    return settings


def parse_command_line(prog: str, build_parser, argv: list[str] | None):
    """Load the extensions (:mod:`soteria_lib.extensions`: their defenses and attacks become choices),
    then parse ``argv``; an extension that fails to load is one line and exit status 2."""
    try:
        load_extensions()
    except ExtensionError as exc:
        sys.exit(fail(prog, str(exc)))
    return build_parser().parse_args(argv)


def fail(prog: str, message: str, code: int = 2) -> int:
    """Print ``prog: error: message`` on stderr and return ``code`` (2: usage, 1: a failed run)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def check_writable_folder(path: str | Path, what: str = "output folder") -> None:
    """``path`` is, or can be created as, a folder this process can write to. Nothing is created:
    the nearest existing folder on the way is probed with a temporary file that is removed."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} exists and is not a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{what} {path} cannot be created: {probe} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".soteria-probe.")
    except OSError as exc:
        raise ValueError(f"{what} {path} is not writable ({exc.strerror})") from None
    os.close(fd)
    os.unlink(tmp)


def check_writable_file(path: str | Path, what: str = "output file") -> None:
    """``path`` is a file that can be written (or created) in a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ValueError(f"{what} {path} exists and is not a file")
    check_writable_folder(path.parent, f"the folder of {what} {path}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{what} {path} is not writable")


_received: list[int] = []


def _raise_interrupt(number, frame):
    _received.append(number)
    if len(_received) == 1:  # later signals find the run already stopping: they must not cut short
        raise KeyboardInterrupt  # the saving of what was finished (nor land in a finaliser)


def handle_signals() -> None:
    """The first Ctrl-C or SIGTERM raises ``KeyboardInterrupt``, so that one path keeps finished
    work; further ones are only recorded while it does."""
    _received.clear()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupt)


def interrupted_code() -> int:
    """The exit code of an interrupted run: 128 + the first signal's number (130 for Ctrl-C, 143
    for SIGTERM)."""
    return 128 + (_received[0] if _received else signal.SIGINT)


def exit_with(code: int) -> None:
    """Leave with ``code``; a signal arriving while the interpreter shuts down has nothing left to stop."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)
