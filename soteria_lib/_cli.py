"""What the three command lines share: one-line usage errors, argument types, output checks and
the exit codes of an interrupted run or a refused write.

Private to ``reconstruct``, ``fedavg`` and ``experiments``; no library module imports it. It
imports nothing heavy, so that a command line installs its signal handlers (:func:`quiet_start`)
before it loads torch. Bad input exits with status 2 and one line on stderr, before any work
and before any file is written; a run that fails, or an output that the disk refuses during the
run, exits with 1 (:func:`command`); Ctrl-C exits with 130 and SIGTERM with 143, after keeping
what was finished. The command lines are shown in chapters 2, 5 and 6 and in the README.
"""
from __future__ import annotations

import argparse
import errno
import functools
import math
import os
import signal
import sys
import tempfile
from pathlib import Path

from .files import WriteFailed
from .limits import LIMITS
from .ray_cluster import parse_address


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


def count(name: str):
    """The argument type of a count flag: an integer in the range of ``limits.LIMITS[name]``,
    whose upper bound the error message explains."""
    limit = LIMITS[name]
    rule = "a positive integer" if limit.minimum == 1 else f"an integer >= {limit.minimum}"
    at_least = _typed(name, int, lambda v: v >= limit.minimum, rule)

    def parse(text: str) -> int:
        value = at_least(text)
        if value > limit.maximum:
            raise argparse.ArgumentTypeError(f"must be at most {limit.maximum:,} ({limit.why}), got {text!r}")
        return value
    parse.__name__ = name
    return parse


def seed_int(text: str) -> int:
    """An integer in [0, 2**32 - 1] (runtime imports torch, hence here and not above)."""
    from .runtime import MAX_SEED

    return _typed("seed", int, lambda v: 0 <= v <= MAX_SEED, f"an integer in [0, {MAX_SEED}]")(text)


def ray_address(text: str) -> str:
    """``HOST:PORT`` of a Ray head, checked by :func:`soteria_lib.ray_cluster.parse_address`."""
    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


positive_int = _typed("positive int", int, lambda v: v >= 1, "a positive integer")
finite_float = _typed("finite float", float, math.isfinite, "a finite number")
non_negative_float = _typed("non-negative float", float, lambda v: math.isfinite(v) and v >= 0,
                            "a finite number >= 0")
positive_float = _typed("positive float", float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def add_defense_arguments(parser: argparse.ArgumentParser) -> None:
    """``--defense`` and its settings: generic ``--set KEY=VALUE`` (any setting of the chosen defense,
    repeatable) and the historical flags, aliases of the settings each defense registers for them."""
    from .defenses import defense_names  # torch: after quiet_start

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
    from .defenses import defense_info, from_flags, parse_setting

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
    from .extensions import ExtensionError, load_extensions

    try:
        load_extensions()
    except ExtensionError as exc:
        sys.exit(fail(prog, str(exc)))
    return build_parser().parse_args(argv)


def fail(prog: str, message: str, code: int = 2) -> int:
    """Print ``prog: error: message`` on stderr and return ``code`` (2: usage, 1: a failed run)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def _probe(path: Path, what: str, leaf: str = "") -> None:
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} exists and is not a folder")
    probe, missing = path, [leaf] if leaf else []
    while not probe.exists():
        missing.append(probe.name)
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{what} {path} cannot be created: {probe} is not a folder")
    longest = max((len(os.fsencode(name)) for name in missing), default=0)
    if longest > os.pathconf(probe, "PC_NAME_MAX"):  # a missing parent hides this from stat until mkdir
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    fd, tmp = tempfile.mkstemp(dir=probe, prefix=".soteria-probe.")
    try:
        os.write(fd, b"probe")  # a full disk still creates empty files; it refuses their first byte
    finally:
        os.close(fd)
        os.unlink(tmp)


def check_writable_folder(path: str | Path, what: str = "output folder", leaf: str = "") -> None:
    """``path`` is, or can be created as, a folder this process can write to, on a disk with room,
    and ``leaf`` (a file name) can be created in it. Nothing is created: the nearest existing
    folder on the way is probed with a temporary file that is removed. Every refusal (a file in the
    way, no permission, a full disk, a name the file system finds too long) is a one-line
    ``ValueError``."""
    path = Path(path)
    try:
        _probe(path, what, leaf)
    except OSError as exc:
        raise ValueError(f"{what} {path} is not writable ({exc.strerror or exc})") from None


def check_writable_file(path: str | Path, what: str = "output file") -> None:
    """``path`` is a file that can be written (or created) in a writable folder."""
    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            raise ValueError(f"{what} {path} exists and is not a file")
        check_writable_folder(path.parent, f"the folder of {what} {path}", path.name)
        if path.exists() and not os.access(path, os.W_OK):
            raise ValueError(f"{what} {path} is not writable")
    except OSError as exc:
        raise ValueError(f"{what} {path} is not writable ({exc.strerror or exc})") from None


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


def quiet_start(prog: str) -> None:
    """Until :func:`handle_signals` takes over, Ctrl-C or SIGTERM ends the process at once with one
    line and 130 or 143: nothing has started, so nothing is lost. A command line calls this
    first, before it imports torch (which takes a second or more)."""
    def leave(number, frame):
        os.write(2, f"{prog}: error: interrupted before any work; nothing written\n".encode())
        os._exit(128 + number)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, leave)


def interrupted_code() -> int:
    """The exit code of an interrupted run: 128 + the first signal's number (130 for Ctrl-C, 143
    for SIGTERM)."""
    return 128 + (_received[0] if _received else signal.SIGINT)


def command(prog: str):
    """Decorate a command line's ``main``: signal handlers installed first; an output that the
    file system refuses during the run (:class:`~soteria_lib.files.WriteFailed`) is one line and
    exit status 1; a Ctrl-C that no narrower handler caught is one line and 130 or 143."""
    def decorate(main):
        @functools.wraps(main)
        def guarded(argv: list[str] | None = None) -> int:
            handle_signals()
            try:
                return main(argv)
            except WriteFailed as exc:
                return fail(prog, str(exc), 1)
            except KeyboardInterrupt:
                return fail(prog, "interrupted", interrupted_code())
        return guarded
    return decorate


def exit_with(code: int) -> None:
    """Leave with ``code``; a signal arriving while the interpreter shuts down has nothing left to stop."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)
