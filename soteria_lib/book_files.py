"""The committed files the book's chapters read (results of the sweeps, the grids, the Flower Apps),
wherever the notebook runs.

Chapters 5 and 6 draw their tables from results the project commits (``results/``) and the grid
that produced them (``experiments/``); chapters 3 and 8 show committed reconstructions
(``results/figures/``); every chapter states its execution time from ``book/timings.json``. In a checkout of the repository they are read from there;
a notebook opened in Colab or Binder, or copied to another folder, reads the copy that the wheel
carries (``soteria_lib/book_data``, filled at build time from :data:`BUNDLED`, see ``setup.py``).
Nothing is downloaded here: installing the package is the notebook's first cell's job.
"""
from __future__ import annotations

import os
from pathlib import Path

# Glob patterns, relative to the repository root, of the files the notebooks read. setup.py
# reads this tuple (without importing the package) to copy them into the wheel.
BUNDLED = (
    "experiments/*.toml",
    "results/*.csv",
    "results/convergence.png",
    "results/*/*/metrics.json",
    "flower_apps/*/pyproject.toml",  # the Flower Apps chapter 9 runs with `flwr run`
    "flower_apps/*/*/*.py",
    "results/figures/*/*",  # reference-scale reconstructions that chapters 3 and 8 show
    "book/timings.json",  # each chapter's measured execution time (soteria_lib.chapter_times)
)
ROOT_VARIABLE = "SOTERIA_BOOK_ROOT"  # a folder laid out like the repository, overriding both
PACKAGE_COPY = "book_data"  # the folder inside the installed package that holds the bundled copy
_MARKERS = ("_toc.yml", "results", "experiments")  # what makes a folder the repository's root


def book_root() -> Path:
    """The folder whose ``results/`` and ``experiments/`` the chapters read.

    In order: ``$SOTERIA_BOOK_ROOT``; the checkout this package was installed from (an editable
    install); the copy bundled in the installed package.
    """
    if os.environ.get(ROOT_VARIABLE):
        return Path(os.environ[ROOT_VARIABLE]).expanduser()
    package = Path(__file__).resolve().parent
    checkout = package.parent
    if all((checkout / marker).exists() for marker in _MARKERS):
        return checkout
    return package / PACKAGE_COPY


def book_file(*parts: str) -> Path:
    """The committed file or folder ``results/...``, ``experiments/...`` or ``flower_apps/...`` of the book.

    Raises :class:`FileNotFoundError` with one line naming where it looked.
    """
    path = book_root().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"{'/'.join(parts)} is not under {book_root()}; install soteria-lib from the repository "
            f"(its wheel carries the book's results) or set {ROOT_VARIABLE} to a checkout")
    return path
