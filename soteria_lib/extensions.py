"""Extensions: a defense or an attack of your own, in one file, reaches every command line and
every sweep worker (chapter 5 shows one).

An extension is a Python file (or an importable module) that registers what it adds with
``@register_defense`` (:mod:`soteria_lib.defenses.registry`) or ``@register_attack``
(:mod:`soteria_lib.attacks.registry`). Name it in the environment variable ``SOTERIA_EXTENSIONS``
(several separated by ``:``)::

    SOTERIA_EXTENSIONS=my_blur.py python -m soteria_lib.reconstruct --defense blur --set radius=1

The command lines load the extensions before they read their arguments, and a sweep's worker
processes load them again when they start (they inherit the environment). In a notebook or a
script, importing the file is enough.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path

VARIABLE = "SOTERIA_EXTENSIONS"
_LOADED: set[str] = set()


class ExtensionError(ImportError):
    """An extension named in ``SOTERIA_EXTENSIONS`` cannot be loaded; the message is one line."""


def _load(name: str) -> None:
    path = Path(name)
    if path.suffix == ".py":
        if not path.is_file():
            raise ExtensionError(f"{VARIABLE}: no extension file {name}")
        module = f"soteria_extension_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(module, path)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[module] = loaded
        spec.loader.exec_module(loaded)
    else:
        importlib.import_module(name)


def load_extensions() -> list[str]:
    """Import every extension named in ``SOTERIA_EXTENSIONS`` once per process; returns their names."""
    names = [n for n in os.environ.get(VARIABLE, "").split(":") if n.strip()]
    for name in names:
        if name in _LOADED:
            continue
        try:
            _load(name)
        except ExtensionError:
            raise
        except Exception as exc:  # an extension's own error, reported in one line
            raise ExtensionError(f"{VARIABLE}: extension {name} failed to load ({type(exc).__name__}: {exc})") from None
        _LOADED.add(name)
    return names
